#!/usr/bin/env python3
"""Play Twilio's side of a Media Streams call against a bot, and time the bot.

Per call, as Twilio does: `connected`, `start`, then one `media` message (160
bytes of 8 kHz mu-law, base64) every 20 ms in real time for the whole call:

    lead-in silence | utterance 1 | silence ... | utterance 2 (barge-in) | silence ... | `stop`

Utterance 2 starts --barge-in-ms after the bot's first non-silent audio, i.e.
while the bot is still speaking its reply. Bot `mark`s are echoed back when the
audio before them has "played" (a real-time playback clock, as Twilio does); a
`clear` empties the playback buffer and echoes pending marks at once.

Figures per call (milliseconds):
  ttfa_ms        end of utterance 1 -> first bot `media` with non-silent audio
  clear_ms       start of utterance 2 -> first `clear` after it (barge-in seen)
  stop_ms        start of utterance 2 -> last bot `media` of the interrupted reply
  ttfa2_ms       end of utterance 2 -> first non-silent audio of the next reply
  clears_before_barge_in   `clear`s received before utterance 2 (Pipecat sends one
                           at the start of every user turn, even with the bot silent)

    python twilio_client.py --url ws://127.0.0.1:PORT/ws --calls 3
Prints one JSON object per call and a summary line; exit 1 if any call lacks a figure.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import statistics
import sys
import time
import uuid
import warnings
import wave

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop

import websockets

RATE = 8000
FRAME = 160  # samples per 20 ms
FRAME_S = 0.02
SILENT_RMS = 200  # 16-bit linear RMS below this counts as silence (~ -44 dBFS)
STOP_GAP_S = 0.15  # no bot media for this long = the interrupted reply stopped

HERE = os.path.dirname(os.path.abspath(__file__))
AUDIO_DIR = os.path.normpath(os.path.join(HERE, "..", "..", "audio_files"))
ULAW_SILENCE = audioop.lin2ulaw(bytes(2 * FRAME), 2)


def load_utterance(path: str) -> tuple[list[bytes], int, int]:
    """WAV -> list of 20 ms mu-law frames at 8 kHz, index of first/last speech frame."""
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2:
            raise SystemExit(f"{path}: need 16-bit PCM")
        pcm = w.readframes(w.getnframes())
        if w.getnchannels() == 2:
            pcm = audioop.tomono(pcm, 2, 0.5, 0.5)
        if w.getframerate() != RATE:
            pcm, _ = audioop.ratecv(pcm, 2, 1, w.getframerate(), RATE, None)
    pcm += bytes((-len(pcm)) % (2 * FRAME))
    frames, loud = [], []
    for i in range(0, len(pcm), 2 * FRAME):
        chunk = pcm[i : i + 2 * FRAME]
        if audioop.rms(chunk, 2) > SILENT_RMS:
            loud.append(len(frames))
        frames.append(audioop.lin2ulaw(chunk, 2))
    if not loud:
        raise SystemExit(f"{path}: no speech found")
    return frames, loud[0], loud[-1]


def resolve_wav(name: str) -> str:
    if os.path.exists(name):
        return name
    p = os.path.join(AUDIO_DIR, name if name.endswith(".wav") else name + ".wav")
    if os.path.exists(p):
        return p
    raise SystemExit(f"no such WAV: {name}")


class Call:
    def __init__(self, idx: int, args, utt1, utt2):
        self.idx = idx
        self.args = args
        self.utt1 = utt1
        self.utt2 = utt2
        self.stream_sid = "MZ" + uuid.uuid4().hex
        self.call_sid = "CA" + uuid.uuid4().hex
        self.account_sid = "AC" + "0" * 32
        self.seq = 0
        self.chunk = 0
        self.t0 = 0.0
        self.ws = None
        self.send_lock = asyncio.Lock()
        # observations (monotonic seconds)
        self.bot_media: list[tuple[float, int]] = []  # (time, rms)
        self.payload_sizes: dict[int, int] = {}  # mu-law bytes per bot `media` -> count
        self.media_keys: set[str] = set()
        self.clears: list[float] = []
        self.marks_in: list[tuple[float, str]] = []
        self.marks_out: list[tuple[float, str]] = []
        self.other: dict[str, int] = {}
        self.binary_in = 0
        self.play_end = 0.0
        self.pending_marks: dict[asyncio.Task, str] = {}
        self.utt1_end = None
        self.utt2_start = None
        self.utt2_end = None
        self.first_audio = None
        self.close_info = None

    # ---- sending

    async def send(self, obj: dict):
        async with self.send_lock:
            await self.ws.send(json.dumps(obj))

    def next_seq(self) -> str:
        self.seq += 1
        return str(self.seq)

    async def send_media(self, ulaw: bytes):
        self.chunk += 1
        await self.send(
            {
                "event": "media",
                "sequenceNumber": self.next_seq(),
                "media": {
                    "track": "inbound",
                    "chunk": str(self.chunk),
                    "timestamp": str(int((time.monotonic() - self.t0) * 1000)),
                    "payload": base64.b64encode(ulaw).decode("ascii"),
                },
                "streamSid": self.stream_sid,
            }
        )

    async def sender(self):
        a = self.args
        await self.send({"event": "connected", "protocol": "Call", "version": "1.0.0"})
        await self.send(
            {
                "event": "start",
                "sequenceNumber": self.next_seq(),
                "start": {
                    "accountSid": self.account_sid,
                    "streamSid": self.stream_sid,
                    "callSid": self.call_sid,
                    "tracks": ["inbound"],
                    "customParameters": {"caller": f"interop-{self.idx}"},
                    "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": RATE, "channels": 1},
                },
                "streamSid": self.stream_sid,
            }
        )
        self.t0 = time.monotonic()
        tick = 0

        async def pace():
            nonlocal tick
            tick += 1
            delay = self.t0 + tick * FRAME_S - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)

        async def play(utt, on_start, on_end):
            frames, first, last = utt
            for i, fr in enumerate(frames):
                await self.send_media(fr)
                now = time.monotonic()
                if i == first:
                    on_start(now)
                if i == last:
                    on_end(now)
                await pace()

        async def silence_until(cond, limit_s):
            end = time.monotonic() + limit_s
            while not cond() and time.monotonic() < end:
                await self.send_media(ULAW_SILENCE)
                await pace()
            return cond()

        for _ in range(int(a.lead_ms / 20)):
            await self.send_media(ULAW_SILENCE)
            await pace()
        await play(self.utt1, lambda t: None, lambda t: setattr(self, "utt1_end", t))

        if a.trailing_silence_ms is not None:
            # Send only this much silence, then no media at all until the bot speaks
            # (Twilio never does this; it shows what the bot needs from a caller).
            await silence_until(lambda: False, a.trailing_silence_ms / 1000.0)
            end = time.monotonic() + a.timeout
            while self.first_audio is None and time.monotonic() < end:
                await asyncio.sleep(FRAME_S)
                tick += 1
            tick = int((time.monotonic() - self.t0) / FRAME_S)

        # Silence until the bot has been speaking for --barge-in-ms.
        ok = await silence_until(
            lambda: self.first_audio is not None
            and time.monotonic() >= self.first_audio + a.barge_in_ms / 1000.0,
            a.timeout,
        )
        if ok and not a.no_barge_in:
            await play(
                self.utt2,
                lambda t: setattr(self, "utt2_start", t),
                lambda t: setattr(self, "utt2_end", t),
            )
            # Silence until the next reply has started (or a few seconds).
            await silence_until(lambda: self.ttfa2() is not None, a.tail_secs)
            # ... and until it has ended (no bot media for 0.5 s), so the call ends quietly.
            await silence_until(
                lambda: not self.bot_media or time.monotonic() - self.bot_media[-1][0] > 0.5,
                a.reply_wait_secs,
            )
        elif ok:
            await silence_until(lambda: False, a.tail_secs)

        await self.send(
            {
                "event": "stop",
                "sequenceNumber": self.next_seq(),
                "streamSid": self.stream_sid,
                "stop": {"accountSid": self.account_sid, "callSid": self.call_sid},
            }
        )

    # ---- receiving

    async def echo_mark(self, name: str, delay: float):
        try:
            if delay > 0:
                await asyncio.sleep(delay)
        except asyncio.CancelledError:
            pass  # `clear`: Twilio returns pending marks at once
        try:
            await self.send(
                {"event": "mark", "sequenceNumber": self.next_seq(), "streamSid": self.stream_sid, "mark": {"name": name}}
            )
            self.marks_out.append((time.monotonic(), name))
        except Exception:
            pass

    async def receiver(self):
        async for raw in self.ws:
            now = time.monotonic()
            if isinstance(raw, bytes):
                self.binary_in += 1
                continue
            try:
                msg = json.loads(raw)
            except ValueError:
                self.other["<not json>"] = self.other.get("<not json>", 0) + 1
                continue
            ev = msg.get("event")
            if msg.get("streamSid") != self.stream_sid:
                self.other["<wrong streamSid>"] = self.other.get("<wrong streamSid>", 0) + 1
            if ev == "media":
                ulaw = base64.b64decode(msg["media"]["payload"])
                rms = audioop.rms(audioop.ulaw2lin(ulaw, 2), 2)
                self.payload_sizes[len(ulaw)] = self.payload_sizes.get(len(ulaw), 0) + 1
                self.media_keys.add(",".join(sorted(msg)) + " / media:" + ",".join(sorted(msg["media"])))
                self.bot_media.append((now, rms))
                self.play_end = max(now, self.play_end) + len(ulaw) / RATE
                if rms > SILENT_RMS and self.first_audio is None and self.utt1_end is not None:
                    self.first_audio = now
            elif ev == "clear":
                self.clears.append(now)
                self.play_end = now
                for t in list(self.pending_marks):
                    t.cancel()
            elif ev == "mark":
                name = msg.get("mark", {}).get("name", "")
                self.marks_in.append((now, name))
                t = asyncio.create_task(self.echo_mark(name, self.play_end - now))
                self.pending_marks[t] = name
                t.add_done_callback(lambda t: self.pending_marks.pop(t, None))
            else:
                self.other[str(ev)] = self.other.get(str(ev), 0) + 1

    # ---- figures

    def first_loud_after(self, t0: float):
        for t, rms in self.bot_media:
            if t >= t0 and rms > SILENT_RMS:
                return t
        return None

    def reply1_stop(self):
        """Time of the last bot media of the reply that utterance 2 interrupted."""
        if self.utt2_start is None:
            return None
        last = self.utt2_start
        for t, _ in self.bot_media:
            if t < self.utt2_start:
                continue
            if t - last > STOP_GAP_S:
                break
            last = t
        return last

    def ttfa2(self):
        stop = self.reply1_stop()
        if stop is None or self.utt2_end is None:
            return None
        t = self.first_loud_after(max(stop + 0.001, self.utt2_end))
        return None if t is None else t - self.utt2_end

    def figures(self) -> dict:
        ms = lambda x: None if x is None else round(x * 1000, 1)
        ttfa = None if self.first_audio is None else self.first_audio - self.utt1_end
        clear_after = None
        if self.utt2_start is not None:
            c = [t for t in self.clears if t >= self.utt2_start]
            clear_after = c[0] - self.utt2_start if c else None
        stop = self.reply1_stop()
        media_after_clear = None
        if clear_after is not None:
            tc = self.utt2_start + clear_after
            media_after_clear = sum(1 for t, _ in self.bot_media if tc < t <= (stop or tc))
        out = {
            "call": self.idx,
            "streamSid": self.stream_sid,
            "ttfa_ms": ms(ttfa),
            "clear_ms": ms(clear_after),
            "stop_ms": ms(None if stop is None else stop - self.utt2_start),
            "ttfa2_ms": ms(self.ttfa2()),
            "clears_before_barge_in": sum(1 for t in self.clears if self.utt2_start is None or t < self.utt2_start),
            "clears_total": len(self.clears),
            "bot_media": len(self.bot_media),
            "bot_media_after_clear": media_after_clear,
            "bot_payload_bytes": {str(k): v for k, v in sorted(self.payload_sizes.items())},
            "bot_media_keys": sorted(self.media_keys),
            "marks_in": len(self.marks_in),
            "marks_echoed": len(self.marks_out),
            "binary_in": self.binary_in,
            "other_events": self.other,
            "close": self.close_info,
        }
        if self.args.trace:
            rel = lambda t: None if t is None else round((t - self.t0) * 1000)
            out["trace_ms"] = {
                "utt1_end": rel(self.utt1_end),
                "first_audio": rel(self.first_audio),
                "utt2_start": rel(self.utt2_start),
                "utt2_end": rel(self.utt2_end),
                "reply1_stop": rel(stop),
                "clears": [rel(t) for t in self.clears],
                "media_spans": self.media_spans(rel),
            }
        return out

    def media_spans(self, rel):
        """Bot media as [first, last] runs (ms since the first caller media), split at gaps."""
        spans = []
        for t, _ in self.bot_media:
            if spans and t - spans[-1][1] <= STOP_GAP_S:
                spans[-1][1] = t
            else:
                spans.append([t, t])
        return [[rel(a), rel(b)] for a, b in spans]

    async def run(self) -> dict:
        url = self.args.url
        async with websockets.connect(url, max_size=None, ping_interval=None, open_timeout=10) as ws:
            self.ws = ws
            recv = asyncio.create_task(self.receiver())
            try:
                await asyncio.wait_for(self.sender(), self.args.timeout + 30)
                # Twilio closes the socket after `stop`; give the bot a moment to close first.
                try:
                    await asyncio.wait_for(asyncio.shield(recv), 2.0)
                except asyncio.TimeoutError:
                    pass
            finally:
                await ws.close()
                self.close_info = {"code": ws.close_code, "reason": ws.close_reason}
                recv.cancel()
                await asyncio.gather(recv, return_exceptions=True)
        return self.figures()


def summarize(results: list[dict], key: str) -> str:
    xs = [r[key] for r in results if r.get(key) is not None]
    if not xs:
        return f"{key}=n/a"
    return f"{key} min={min(xs):.0f} median={statistics.median(xs):.0f} max={max(xs):.0f}"


async def main_async(args) -> int:
    utt1 = load_utterance(resolve_wav(args.utterance))
    utt2 = load_utterance(resolve_wav(args.barge_in_utterance))

    async def one(i):
        await asyncio.sleep(i * args.stagger_ms / 1000.0)
        c = Call(i, args, utt1, utt2)
        try:
            r = await c.run()
        except Exception as e:
            r = c.figures() if c.utt1_end else {"call": i}
            r["error"] = f"{e.__class__.__name__}: {e}"
        print(json.dumps(r), flush=True)
        return r

    results = await asyncio.gather(*(one(i) for i in range(args.calls)))
    need = ["ttfa_ms"] if args.no_barge_in else ["ttfa_ms", "clear_ms", "stop_ms"]
    bad = [r for r in results if r.get("error") or any(r.get(k) is None for k in need)]
    print(
        f"SUMMARY calls={len(results)} ok={len(results) - len(bad)} "
        + " ".join(summarize(results, k) for k in ["ttfa_ms", "clear_ms", "stop_ms", "ttfa2_ms"]),
        flush=True,
    )
    return 1 if bad else 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--url", required=True, help="bot WebSocket URL, e.g. ws://127.0.0.1:8765/ws")
    p.add_argument("--calls", type=int, default=1, help="concurrent calls")
    p.add_argument("--stagger-ms", type=float, default=100, help="delay between call starts")
    p.add_argument("--utterance", default="hello.wav", help="first utterance (name in audio_files/ or a path)")
    p.add_argument("--barge-in-utterance", default="cancel.wav", help="utterance spoken over the bot's reply")
    p.add_argument("--lead-ms", type=float, default=300, help="silence before utterance 1")
    p.add_argument("--barge-in-ms", type=float, default=1000, help="start utterance 2 this long after the bot's first audio")
    p.add_argument("--no-barge-in", action="store_true", help="only measure time-to-first-audio")
    p.add_argument("--trailing-silence-ms", type=float, default=None,
                   help="after utterance 1 send only this much silence, then no media until the bot speaks "
                        "(default: stream silence continuously, as Twilio does)")
    p.add_argument("--reply-wait-secs", type=float, default=5.0,
                   help="max time to let the bot's second reply play out before `stop` (0: hang up at once)")
    p.add_argument("--tail-secs", type=float, default=6.0, help="max silence after utterance 2 while waiting for the next reply")
    p.add_argument("--trace", action="store_true", help="add a timeline (ms since the first caller media) to each call's JSON")
    p.add_argument("--timeout", type=float, default=15.0, help="max wait for the bot's first audio")
    args = p.parse_args(argv)
    return asyncio.run(main_async(args))


if __name__ == "__main__":
    sys.exit(main())
