#!/usr/bin/env bash
# Create (or reuse) the Python venv for the Pipecat SmallWebRTC interop bot.
#
#   interop/pipecat_webrtc/setup.sh [VENV_DIR]
#
# VENV_DIR defaults to target/pipecat-webrtc-venv under the repository root. The work is
# interop/pipecat/setup.sh's (idempotent, stamped with the hash of this folder's
# requirements.txt + constraints.txt + the Python version); it prints the venv's python path
# last:  PY=$(interop/pipecat_webrtc/setup.sh | tail -n1)
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
PIPECAT_SETUP_NAME=pipecat_webrtc \
PIPECAT_SETUP_DIR="$here" \
PIPECAT_SETUP_VENV=target/pipecat-webrtc-venv \
PIPECAT_SETUP_IMPORTS="pipecat, uvicorn, fastapi, aiortc" \
PIPECAT_SETUP_CHECK="from pipecat.transports.smallwebrtc.request_handler import SmallWebRTCRequestHandler
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport" \
  exec bash "$here/../pipecat/setup.sh" "$@"
