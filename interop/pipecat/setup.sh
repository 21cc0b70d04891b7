#!/usr/bin/env bash
# Create (or reuse) the Python venv for the Pipecat interop bot.
#
#   interop/pipecat/setup.sh [VENV_DIR]
#
# VENV_DIR defaults to target/pipecat-venv under the repository root (target/
# is gitignored). A relative VENV_DIR is taken relative to the current
# directory. Idempotent: a stamp file inside the venv records the hash of
# requirements.txt + constraints.txt + the Python version, and a second run
# with the same hash does nothing. Prints the venv's python path last, so a
# caller can do:  PY=$(interop/pipecat/setup.sh | tail -n1)
#
# Environment: PYTHON (default python3) picks the interpreter. interop/pipecat_webrtc/setup.sh
# runs this script for its own bot with PIPECAT_SETUP_{NAME,DIR,VENV,IMPORTS,CHECK} set: the
# folder holding requirements.txt and constraints.txt, the default venv under target/, the modules
# that must import for the venv to count as ready, and the imports checked after installing.
set -euo pipefail
# The checks below import onnxruntime; its telemetry must never reach the network
# (see bot.py and tests/interop_guard.rs).
export ORT_DISABLE_TELEMETRY=1

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$(cd "$here/../.." && pwd)"
name="${PIPECAT_SETUP_NAME:-pipecat}"
here="${PIPECAT_SETUP_DIR:-$here}"
imports="${PIPECAT_SETUP_IMPORTS:-pipecat, uvicorn, fastapi, websockets}"
check="${PIPECAT_SETUP_CHECK:-from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.transports.websocket.fastapi import FastAPIWebsocketTransport}"
req="$here/requirements.txt"
cons="$here/constraints.txt"
python="${PYTHON:-python3}"

die() { echo "$name setup: error: $*" >&2; exit 1; }
log() { echo "$name setup: $*" >&2; }

venv="${1:-$root/${PIPECAT_SETUP_VENV:-target/pipecat-venv}}"
case "$venv" in
  /*) ;;
  *) venv="$(pwd)/$venv" ;;
esac

[ -f "$req" ] || die "missing $req"
[ -f "$cons" ] || die "missing $cons"
command -v "$python" >/dev/null 2>&1 || die "'$python' not found; install Python 3.11 (or set PYTHON=/path/to/python3.11)"

pyver="$("$python" -c 'import sys; print("%d.%d" % sys.version_info[:2])')" \
  || die "'$python' does not run"
case "$pyver" in
  3.11) ;;
  3.10|3.12|3.13) log "warning: Python $pyver; the pins were verified with 3.11" ;;
  *) die "Python $pyver is not supported (pipecat-ai 1.14 needs >= 3.10; pins verified with 3.11)" ;;
esac

hash_cmd() {
  if command -v sha256sum >/dev/null 2>&1; then sha256sum | cut -d' ' -f1
  else "$python" -c 'import hashlib,sys; print(hashlib.sha256(sys.stdin.buffer.read()).hexdigest())'
  fi
}
want="$( { cat "$req" "$cons"; echo "python $pyver"; } | hash_cmd )"
stamp="$venv/.interop-${name//_/-}-stamp"
vpy="$venv/bin/python"

if [ -x "$vpy" ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] \
   && "$vpy" -c "import $imports" >/dev/null 2>&1; then
  log "venv up to date: $venv"
  echo "$vpy"
  exit 0
fi

if [ -e "$venv" ] && ! [ -x "$vpy" ]; then
  die "$venv exists but is not a venv (no bin/python); remove it or pick another VENV_DIR"
fi

if ! [ -x "$vpy" ]; then
  log "creating venv at $venv (Python $pyver)"
  mkdir -p "$(dirname "$venv")"
  "$python" -m venv "$venv" \
    || die "'$python -m venv' failed (on Debian/Ubuntu: apt-get install python3-venv)"
fi

rm -f "$stamp"
log "installing requirements (this takes about a minute the first time)"
if ! "$vpy" -m pip install --disable-pip-version-check -q -r "$req" -c "$cons"; then
  die "pip install failed (needs PyPI reachable, or a pip cache with the pinned wheels); see the pip output above"
fi
"$vpy" -c "import $imports, onnxruntime
from pipecat.audio.vad.silero import SileroVADAnalyzer
$check" \
  || die "the venv installed but pipecat does not import; see the error above"
echo "$want" > "$stamp"
log "venv ready: $venv"
echo "$vpy"
