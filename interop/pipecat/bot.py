#!/usr/bin/env python3
"""A real Pipecat voice bot speaking Twilio Media Streams, for planrun's interop test.

One FastAPI app under uvicorn on 127.0.0.1. Each WebSocket connection to /ws gets
its own Pipecat pipeline:

    transport.input()          FastAPIWebsocketTransport + TwilioFrameSerializer (8 kHz mu-law)
    StandInSTT                 SegmentedSTTService: one transcript per VAD speech segment
    user aggregator            LLMUserAggregator with Silero VAD; turn start = VAD (interrupts),
                               turn stop = SpeechTimeoutUserTurnStopStrategy
    StandInLLM                 FrameProcessor: LLMContextFrame -> text reply after a delay
    StandInTTS                 TTSService: a voiced, vowel-like signal of a fixed duration
    transport.output()         paces audio in real time, 20 ms per Twilio `media` message
    assistant aggregator

Only the STT/LLM/TTS are stand-ins (no network, no models besides Silero, which
ships in the pipecat-ai wheel). Everything on the wire is Pipecat's own code.

    python bot.py --port 0      # prints "READY port=N" (flushed) once it accepts connections

SIGTERM/SIGINT: uvicorn stops accepting, closes open sockets and the process exits 0.
"""

from __future__ import annotations

import os

# Must come before any pipecat import (issue 17). Silero VAD runs on onnxruntime, whose
# Linux wheel has built-in telemetry: seconds after a model load it looks its host up in
# DNS (without this line: six port-53 connects 13-28 s after start). Only
# ORT_DISABLE_TELEMETRY=1 set before onnxruntime initialises stops it
# (onnxruntime.disable_telemetry_events() does not). Forced, not setdefault: with
# ORT_DISABLE_TELEMETRY=0 in the caller's environment a setdefault version made the same six
# lookups. tests/interop_guard.rs checks this line (and, with PLANRUN_TRACE_NET=1, traces).
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import argparse
import asyncio
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

from fastapi import FastAPI, WebSocket
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
from pipecat.runner.utils import parse_telephony_websocket
from pipecat.serializers.twilio import TwilioFrameSerializer
from pipecat.services.settings import STTSettings, TTSSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.tts_service import TTSService
from pipecat.transports.websocket.fastapi import (
    FastAPIWebsocketParams,
    FastAPIWebsocketTransport,
)
from pipecat.turns.user_start import VADUserTurnStartStrategy
from pipecat.turns.user_stop import SpeechTimeoutUserTurnStopStrategy
from pipecat.turns.user_turn_strategies import UserTurnStrategies
from pipecat.utils.time import time_now_iso8601
from pipecat.workers.runner import WorkerRunner

SAMPLE_RATE = 8000  # Twilio's rate; the pipeline runs at it end to end (no resampling).
FRAME_MS = 20


# --------------------------------------------------------------------------- stand-ins


from standins import StandInLLM, StandInSTT, StandInTTS, load_wav, synth_voice


# --------------------------------------------------------------------------- app


def build_app(args: argparse.Namespace, reply_audio: bytes) -> FastAPI:
    app = FastAPI()
    app.state.sessions = 0
    app.state.total = 0

    @app.get("/health")
    async def health():
        return {"ok": True, "sessions": app.state.sessions, "total": app.state.total}

    @app.websocket("/ws")
    async def ws_endpoint(websocket: WebSocket):
        await websocket.accept()
        app.state.sessions += 1
        app.state.total += 1
        n = app.state.total
        try:
            await run_session(websocket, args, reply_audio, n)
        except Exception as e:  # one broken session must not take the server down
            logger.error(f"session {n}: {e.__class__.__name__}: {e}")
            try:
                await websocket.close(code=1011)
            except Exception:
                pass
        finally:
            app.state.sessions -= 1
            if args.verbose:
                print(f"session {n} ended", file=sys.stderr, flush=True)

    return app


async def run_session(websocket: WebSocket, args, reply_audio: bytes, n: int):
    # Pipecat's own handshake parser, as its Twilio examples use: reads the first
    # two text messages ("connected", "start") and finds the Twilio `start`.
    try:
        transport_type, call_data = await parse_telephony_websocket(websocket)
    except Exception as e:
        logger.warning(f"session {n}: handshake failed: {e}")
        await websocket.close(code=1008)
        return
    if transport_type != "twilio":
        logger.warning(f"session {n}: not a Twilio `start` (detected {transport_type!r})")
        await websocket.close(code=1008)
        return
    stream_sid = call_data["stream_id"]
    call_sid = call_data["call_id"]
    if args.verbose:
        print(f"session {n}: start streamSid={stream_sid} callSid={call_sid}", file=sys.stderr, flush=True)

    serializer = TwilioFrameSerializer(
        stream_sid=stream_sid,
        call_sid=call_sid,
        params=TwilioFrameSerializer.InputParams(
            twilio_sample_rate=SAMPLE_RATE,
            auto_hang_up=False,  # hang-up would call Twilio's REST API
        ),
    )
    transport = FastAPIWebsocketTransport(
        websocket=websocket,
        params=FastAPIWebsocketParams(
            audio_in_enabled=True,
            audio_out_enabled=True,
            add_wav_header=False,
            serializer=serializer,
            audio_out_10ms_chunks=FRAME_MS // 10,  # one Twilio `media` message per 20 ms
            allowed_origins=[],
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
    # p99 is measured from speech end, so it includes VAD stop_secs (Pipecat warns otherwise).
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
    async def on_client_disconnected(_transport, _ws):
        # The caller hung up (`stop` is not special to Pipecat: the socket closing is).
        await worker.cancel()

    runner = WorkerRunner(handle_sigint=False, handle_sigterm=False)
    await runner.add_workers(worker)
    await runner.run()


# --------------------------------------------------------------------------- main


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8765, help="0 picks a free port (reported on the READY line)")
    p.add_argument("--stt-ms", type=float, default=50, help="STT: transcript this long after VAD end of speech")
    p.add_argument("--llm-ms", type=float, default=150, help="LLM: reply text this long after the user turn ends")
    p.add_argument("--reply-secs", type=float, default=3.0, help="TTS: length of each spoken reply")
    p.add_argument("--reply-wav", default=None, help="TTS: speak this WAV (looped/cut to --reply-secs) instead of the synthetic voice")
    p.add_argument("--reply-text", default="This is the stand-in reply from the Pipecat interop bot.")
    p.add_argument("--vad-start-secs", type=float, default=0.2, help="Silero: speech needed to start a turn (Pipecat default 0.2)")
    p.add_argument("--vad-stop-secs", type=float, default=0.2, help="Silero: silence needed to end speech (Pipecat default 0.2)")
    p.add_argument("--vad-confidence", type=float, default=0.7, help="Silero: voice confidence threshold (Pipecat default 0.7)")
    p.add_argument("--vad-min-volume", type=float, default=0.6, help="Silero: minimum smoothed volume (Pipecat default 0.6)")
    p.add_argument("--turn-stop-secs", type=float, default=0.6,
                   help="SpeechTimeoutUserTurnStopStrategy user_speech_timeout: more silence after VAD stop "
                        "before the turn ends (Pipecat default 0.6; below ~0.4 the comma pauses in "
                        "audio_files/ split a sentence into two turns)")
    p.add_argument("--idle-timeout-secs", type=float, default=0,
                   help="cancel a session with no speech for this long (0: never; Pipecat default 300)")
    p.add_argument("--no-warmup", dest="warmup", action="store_false",
                   help="print READY without first making one short call to itself (~2-3 s)")
    p.add_argument("--log-level", default="WARNING", help="Pipecat (loguru) log level: DEBUG, INFO, WARNING, ...")
    p.add_argument("--verbose", action="store_true", help="print one line per session start/end on stderr")
    return p.parse_args(argv)


async def warm_up(port: int, timeout: float = 15.0) -> bool:
    """One short call to ourselves before READY, so the first real calls don't pay
    Pipecat's first-session costs (lazy imports, ONNX/numba warm-up): measured
    +180 ms on one cold call, seconds on 8 cold concurrent calls."""
    import base64
    import json

    import websockets

    sid = "MZwarmup"
    # Real speech: Silero does not take the synthetic reply voice for speech.
    wav = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "audio_files", "hello.wav")
    if not os.path.exists(wav):
        print(f"bot: warm-up skipped (no {wav})", file=sys.stderr, flush=True)
        return False
    voice = audioop.lin2ulaw(load_wav(wav, 1.5, SAMPLE_RATE), 2)
    silence = b"\xff" * 160

    def media(chunk: bytes) -> str:
        return json.dumps({"event": "media", "streamSid": sid,
                           "media": {"payload": base64.b64encode(chunk).decode()}})

    got_audio = asyncio.Event()
    try:
        async with websockets.connect(f"ws://127.0.0.1:{port}/ws", ping_interval=None) as ws:
            async def recv():
                async for m in ws:
                    if isinstance(m, str) and '"media"' in m:
                        got_audio.set()
                        return

            rt = asyncio.create_task(recv())
            await ws.send(json.dumps({"event": "connected", "protocol": "Call", "version": "1.0.0"}))
            await ws.send(json.dumps({"event": "start", "streamSid": sid, "start": {
                "streamSid": sid, "callSid": "CAwarmup", "accountSid": "ACwarmup", "tracks": ["inbound"],
                "customParameters": {}, "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1}}}))
            t0 = time.monotonic()
            frames = [voice[i:i + 160] for i in range(0, len(voice), 160)]
            k = 0
            while not got_audio.is_set() and time.monotonic() - t0 < timeout:
                await ws.send(media(frames[k] if k < len(frames) else silence))
                k += 1
                await asyncio.sleep(max(0.0, t0 + k * 0.02 - time.monotonic()))
            rt.cancel()
    except Exception as e:
        print(f"bot: warm-up failed: {e.__class__.__name__}: {e}", file=sys.stderr, flush=True)
    return got_audio.is_set()


async def serve(args: argparse.Namespace) -> int:
    import uvicorn

    if args.reply_wav:
        reply_audio = load_wav(args.reply_wav, args.reply_secs, SAMPLE_RATE)
    else:
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
        ws="websockets-sansio",
        ws_ping_interval=None,
        timeout_graceful_shutdown=3,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    # uvicorn catches SIGTERM/SIGINT during serve() (stop accepting, close open
    # sockets with 1012, wait up to 3 s), then restores the previous handlers and
    # re-raises the signal. A no-op handler here makes that re-raise harmless, so
    # the process exits 0 instead of dying by the signal (143/130).
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: None)
    task = asyncio.create_task(server.serve(sockets=[sock]))
    while not server.started:
        if task.done():
            await task
            return 1
        await asyncio.sleep(0.02)
    if args.warmup:
        t = time.monotonic()
        ok = await warm_up(port)
        print(f"bot: warm-up call {'done' if ok else 'got no reply'} in {time.monotonic() - t:.1f}s",
              file=sys.stderr, flush=True)
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
