#!/usr/bin/env python3
"""A real Pipecat voice bot reached over WebRTC (SmallWebRTC), for planrun's interop test.

One FastAPI app under uvicorn on 127.0.0.1. `POST /api/offer` with {"sdp", "type": "offer"}
answers {"sdp", "type": "answer", "pc_id"} (Pipecat's own SmallWebRTCRequestHandler); each
new peer connection gets its own pipeline:

    transport.input()          SmallWebRTCTransport (aiortc; Opus decoded to 16 kHz PCM)
    StandInSTT                 SegmentedSTTService: one transcript per VAD speech segment
    user aggregator            LLMUserAggregator with Silero VAD; turn start = VAD (interrupts),
                               turn stop = SpeechTimeoutUserTurnStopStrategy
    StandInLLM                 FrameProcessor: LLMContextFrame -> text reply after a delay
    StandInTTS                 TTSService: a voiced, vowel-like signal of a fixed duration
    transport.output()         paces audio in real time; aiortc streams silence in between
    assistant aggregator

Loopback only: aioice skips 127.0.0.1 when it gathers host candidates, so this bot makes it
gather on 127.0.0.1 alone and drops remote candidates that are not loopback; the ICE server
list is empty (no STUN). Only the STT/LLM/TTS are stand-ins; everything on the wire is
Pipecat's and aiortc's own code.

    python bot.py --port 0      # prints "READY port=N" (flushed) once it accepts connections
"""

from __future__ import annotations

import os

# Must come before any pipecat import: onnxruntime (Silero) telemetry would look its host up
# in DNS otherwise (see interop/pipecat/bot.py and tests/interop_guard.rs).
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import asyncio
import ipaddress
import math
import signal
import socket
import sys
import time
import warnings
import wave
from array import array

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # deprecated in 3.11, present until 3.13

import aioice.ice
from fastapi import BackgroundTasks, FastAPI
from loguru import logger

from pipecat.audio.vad.silero import SileroVADAnalyzer
from pipecat.audio.vad.vad_analyzer import VADParams
from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
)
from pipecat.pipeline.pipeline import Pipeline
from pipecat.pipeline.worker import PipelineParams, PipelineWorker
from pipecat.processors.aggregators.llm_context import LLMContext
from pipecat.processors.aggregators.llm_response_universal import (
    LLMContextAggregatorPair,
    LLMUserAggregatorParams,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import STTSettings, TTSSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.tts_service import TTSService
from pipecat.transports.base_transport import TransportParams
from pipecat.transports.smallwebrtc.request_handler import (
    SmallWebRTCRequest,
    SmallWebRTCRequestHandler,
)
from pipecat.transports.smallwebrtc.transport import SmallWebRTCTransport
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.utils.time import time_now_iso8601
from pipecat.workers.runner import WorkerRunner

SAMPLE_RATE = 16000  # the pipeline's rate; SmallWebRTC resamples Opus (48 kHz) to and from it
FRAME_MS = 20


# --------------------------------------------------------------------------- loopback only


def _loopback_only() -> None:
    """Keep aioice on 127.0.0.1: gather there only, and ignore non-loopback remote candidates."""
    aioice.ice.get_host_addresses = lambda use_ipv4, use_ipv6: ["127.0.0.1"] if use_ipv4 else []
    original = aioice.ice.Connection.add_remote_candidate

    async def add_remote_candidate(self, remote_candidate):
        if remote_candidate is not None:
            host = remote_candidate.host
            try:
                loopback = ipaddress.ip_address(host).is_loopback
            except ValueError:  # an mDNS `.local` name
                loopback = False
            if not loopback:
                return
        await original(self, remote_candidate)

    aioice.ice.Connection.add_remote_candidate = add_remote_candidate


_loopback_only()


# --------------------------------------------------------------------------- stand-ins


sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "pipecat"))
from standins import StandInLLM, StandInSTT, StandInTTS, load_wav, synth_voice


# --------------------------------------------------------------------------- app


def build_app(args: argparse.Namespace, reply_audio: bytes) -> FastAPI:
    app = FastAPI()
    app.state.sessions = 0
    app.state.total = 0
    handler = SmallWebRTCRequestHandler(ice_servers=[])

    @app.get("/health")
    async def health():
        return {"ok": True, "sessions": app.state.sessions, "total": app.state.total}

    @app.post("/api/offer")
    async def offer(request: dict, background_tasks: BackgroundTasks):
        app.state.total += 1
        n = app.state.total

        async def on_connection(connection):
            background_tasks.add_task(session, connection, n)

        return await handler.handle_web_request(
            request=SmallWebRTCRequest.from_dict(request),
            webrtc_connection_callback=on_connection,
        )

    async def session(connection, n: int):
        app.state.sessions += 1
        try:
            await run_session(connection, args, reply_audio, n)
        except Exception as e:  # one broken session must not take the server down
            logger.error(f"session {n}: {e.__class__.__name__}: {e}")
        finally:
            app.state.sessions -= 1
            if args.verbose:
                print(f"session {n} ended", file=sys.stderr, flush=True)

    return app


async def run_session(connection, args, reply_audio: bytes, n: int):
    transport = SmallWebRTCTransport(
        webrtc_connection=connection,
        params=TransportParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            audio_out_10ms_chunks=FRAME_MS // 10,
        ),
    )
    vad = SileroVADAnalyzer(
        params=VADParams(
            confidence=args.vad_confidence,
            start_secs=args.vad_start_secs,
            stop_secs=args.vad_stop_secs,
            min_volume=args.vad_min_volume,
        )
    )
    context = LLMContext([{"role": "system", "content": "stand-in"}])
    aggregators = LLMContextAggregatorPair(
        context,
        user_params=LLMUserAggregatorParams(
            vad_analyzer=vad,
            user_turn_strategies=UserTurnStrategies(
                start=[VADUserTurnStartStrategy(enable_interruptions=True)],
                stop=[SpeechTimeoutUserTurnStopStrategy(user_speech_timeout=args.turn_stop_secs)],
            ),
        ),
    )
    stt = StandInSTT(delay=args.stt_ms / 1000.0, p99=args.vad_stop_secs + args.stt_ms / 1000.0 + 0.05)
    llm = StandInLLM(delay=args.llm_ms / 1000.0, reply=args.reply_text)
    tts = StandInTTS(audio=reply_audio, rate=SAMPLE_RATE)
    pipeline = Pipeline(
        [
            transport.input(),
            stt,
            aggregators.user(),
            llm,
            tts,
            transport.output(),
            aggregators.assistant(),
        ]
    )
    worker = PipelineWorker(
        pipeline,
        params=PipelineParams(
            audio_in_sample_rate=SAMPLE_RATE,
            audio_out_sample_rate=SAMPLE_RATE,
            enable_metrics=False,
        ),
        enable_rtvi=False,
        idle_timeout_secs=args.idle_timeout_secs or None,
        cancel_runner_on_idle_timeout=False,
        check_dangling_tasks=False,
    )

    @transport.event_handler("on_client_disconnected")
    async def on_client_disconnected(_transport, _client):
        await worker.cancel()

    if args.verbose:
        print(f"session {n}: started", file=sys.stderr, flush=True)
    runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
    await runner.add_workers(worker)
    await runner.run()


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=7860, help="0 picks a free port (reported on the READY line)")
    p.add_argument("--stt-ms", type=float, default=50, help="STT: transcript this long after VAD end of speech")
    p.add_argument("--llm-ms", type=float, default=150, help="LLM: reply text this long after the user turn ends")
    p.add_argument("--reply-secs", type=float, default=3.0, help="TTS: length of each spoken reply")
    p.add_argument("--reply-text", default="This is the stand-in reply from the Pipecat WebRTC interop bot.")
    p.add_argument("--vad-start-secs", type=float, default=0.2, help="Silero: speech needed to start a turn")
    p.add_argument("--vad-stop-secs", type=float, default=0.2, help="Silero: silence needed to end speech")
    p.add_argument("--vad-confidence", type=float, default=0.7, help="Silero: voice confidence threshold")
    p.add_argument("--vad-min-volume", type=float, default=0.6, help="Silero: minimum smoothed volume")
    p.add_argument("--turn-stop-secs", type=float, default=0.6,
                   help="SpeechTimeoutUserTurnStopStrategy user_speech_timeout (Pipecat default 0.6)")
    p.add_argument("--idle-timeout-secs", type=float, default=0,
                   help="cancel a session with no speech for this long (0: never)")
    p.add_argument("--log-level", default="WARNING", help="Pipecat (loguru) log level")
    p.add_argument("--verbose", action="store_true", help="one line per session start/end on stderr")
    return p.parse_args(argv)


async def serve(args: argparse.Namespace) -> int:
    import uvicorn

    reply_audio = synth_voice(args.reply_secs, SAMPLE_RATE)
    # Load Silero once up front: a broken install fails here, not on the first call.
    SileroVADAnalyzer()

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as e:
        print(f"bot: cannot bind {args.host}:{args.port}: {e}", file=sys.stderr, flush=True)
        return 2
    sock.listen(128)
    port = sock.getsockname()[1]
    config = uvicorn.Config(
        build_app(args, reply_audio),
        log_level="warning",
        timeout_graceful_shutdown=3,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task
            return 1
        await asyncio.sleep(0.02)
    print(f"READY port={port}", flush=True)
    await task
    print("bot: stopped", file=sys.stderr, flush=True)
    return 0


def main(argv=None) -> int:
    args = parse_args(argv)
    logger.remove()
    logger.add(sys.stderr, level=args.log_level.upper())
    return asyncio.run(serve(args))


if __name__ == "__main__":
    sys.exit(main())
