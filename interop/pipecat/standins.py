"""Stand-in STT, LLM and TTS for planrun's Pipecat interop bots (interop/pipecat/bot.py over
Twilio Media Streams, interop/pipecat_webrtc/bot.py over SmallWebRTC): no network and no models,
so everything on the wire is Pipecat's own code. Import after setting ORT_DISABLE_TELEMETRY=1
(the bots do it first thing; see tests/interop_guard.rs).
"""

from __future__ import annotations

import os

# Before any pipecat import, as in the bots (issue 17; tests/interop_guard.rs checks it).
os.environ["ORT_DISABLE_TELEMETRY"] = "1"

import asyncio
import math
import time
import warnings
import wave
from array import array

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    import audioop  # deprecated in 3.11, present until 3.13

from loguru import logger

from pipecat.frames.frames import (
    Frame,
    LLMContextFrame,
    LLMFullResponseEndFrame,
    LLMFullResponseStartFrame,
    LLMTextFrame,
    TranscriptionFrame,
    TTSAudioRawFrame,
)
from pipecat.processors.frame_processor import FrameDirection, FrameProcessor
from pipecat.services.settings import STTSettings, TTSSettings
from pipecat.services.stt_service import SegmentedSTTService
from pipecat.services.tts_service import TTSService
from pipecat.utils.time import time_now_iso8601

FRAME_MS = 20


class StandInSTT(SegmentedSTTService):
    """Pretend speech recognizer: one final transcript per VAD speech segment.

    SegmentedSTTService buffers audio between the VADUserStarted/Stopped frames
    that the user aggregator broadcasts upstream; at the stop it hands us the
    segment, and we answer `delay` seconds later.
    """

    def __init__(self, *, delay: float, p99: float, text: str = "(caller speech)", **kwargs):
        super().__init__(
            trailing_silence_secs=0.0,
            ttfs_p99_latency=p99,
            settings=STTSettings(model=None, language=None),
            **kwargs,
        )
        self._delay = delay
        self._text = text

    @property
    def wants_wav_segments(self) -> bool:
        return False

    async def run_stt(self, audio: bytes):
        await asyncio.sleep(self._delay)
        secs = len(audio) / 2 / max(1, self.sample_rate)
        yield TranscriptionFrame(
            text=f"{self._text} [{secs:.2f}s]",
            user_id="caller",
            timestamp=time_now_iso8601(),
            finalized=True,
        )


class StandInLLM(FrameProcessor):
    """Pretend LLM: answers each LLMContextFrame with one text reply after `delay` s.

    A user turn that starts meanwhile interrupts it: Pipecat cancels this
    processor's frame task on InterruptionFrame, so a pending reply is dropped.
    """

    def __init__(self, *, delay: float, reply: str, **kwargs):
        super().__init__(**kwargs)
        self._delay = delay
        self._reply = reply

    async def process_frame(self, frame: Frame, direction: FrameDirection):
        await super().process_frame(frame, direction)
        if isinstance(frame, LLMContextFrame):
            await self.push_frame(LLMFullResponseStartFrame())
            await asyncio.sleep(self._delay)
            await self.push_frame(LLMTextFrame(self._reply))
            await self.push_frame(LLMFullResponseEndFrame())
        else:
            await self.push_frame(frame, direction)


def synth_voice(seconds: float, rate: int) -> bytes:
    """A voiced, vowel-like signal: 16-bit mono PCM at `rate`.

    A glottal-ish pulse train (f0 ~ 110-150 Hz with slow intonation) whose
    harmonics are shaped by two formants (an /a/-like vowel, F1 700 Hz, F2 1200 Hz),
    with a syllable-rate (4 Hz) loudness envelope that never drops to silence:
    every 20 ms frame is clearly non-silent (RMS well above -40 dBFS). Silero
    VAD scores it as speech, as a real TTS voice would be.
    """
    n = int(seconds * rate)
    out = array("h", bytes(2 * n))
    phase = 0.0
    formants = ((700.0, 130.0, 1.0), (1200.0, 150.0, 0.5), (2600.0, 250.0, 0.15))
    harmonics_cache: dict[int, list[tuple[int, float]]] = {}
    for i in range(n):
        t = i / rate
        f0 = 130.0 + 20.0 * math.sin(2 * math.pi * 0.7 * t)
        phase += 2 * math.pi * f0 / rate
        key = int(f0)
        hs = harmonics_cache.get(key)
        if hs is None:
            hs = []
            k = 1
            while k * key < rate / 2 - 200:
                f = k * key
                amp = sum(
                    g / (1.0 + ((f - fc) / bw) ** 2) for fc, bw, g in formants
                ) / math.sqrt(k)
                if amp > 0.01:
                    hs.append((k, amp))
                k += 1
            harmonics_cache[key] = hs
        s = 0.0
        for k, amp in hs:
            s += amp * math.sin(k * phase)
        env = 0.55 + 0.45 * math.sin(2 * math.pi * 4.0 * t) ** 2
        out[i] = int(max(-32000, min(32000, 9000.0 * env * s)))
    # 10 ms fade in/out so the reply's edges don't click.
    fade = min(n // 2, rate // 100)
    for i in range(fade):
        g = i / fade
        out[i] = int(out[i] * g)
        out[n - 1 - i] = int(out[n - 1 - i] * g)
    return out.tobytes()


def load_wav(path: str, seconds: float, rate: int) -> bytes:
    """A WAV file as 16-bit mono PCM at `rate`, looped or cut to `seconds`."""
    with wave.open(path, "rb") as w:
        if w.getsampwidth() != 2:
            raise SystemExit(f"{path}: need 16-bit PCM")
        pcm = w.readframes(w.getnframes())
        if w.getnchannels() == 2:
            pcm = audioop.tomono(pcm, 2, 0.5, 0.5)
        elif w.getnchannels() != 1:
            raise SystemExit(f"{path}: need mono or stereo")
        if w.getframerate() != rate:
            pcm, _ = audioop.ratecv(pcm, 2, 1, w.getframerate(), rate, None)
    want = int(seconds * rate) * 2
    if not pcm:
        raise SystemExit(f"{path}: empty")
    while len(pcm) < want:
        pcm += pcm
    return pcm[:want]


class StandInTTS(TTSService):
    """Pretend TTS: every text becomes the same fixed-length voice clip, in 20 ms frames."""

    def __init__(self, *, audio: bytes, rate: int, **kwargs):
        super().__init__(
            push_start_frame=True,
            push_stop_frames=True,
            stop_frame_timeout_s=0.5,
            sample_rate=rate,
            settings=TTSSettings(model=None, voice=None, language=None),
            **kwargs,
        )
        self._audio = audio
        self._rate = rate

    def can_generate_metrics(self) -> bool:
        return True

    async def run_tts(self, text: str, context_id: str):
        await self.start_tts_usage_metrics(text)
        step = self.sample_rate * FRAME_MS // 1000 * 2
        if self.sample_rate != self._rate:  # never, unless the pipeline rate changes
            audio, _ = audioop.ratecv(self._audio, 2, 1, self._rate, self.sample_rate, None)
        else:
            audio = self._audio
        first = True
        for off in range(0, len(audio), step):
            if first:
                await self.stop_ttfb_metrics()
                first = False
            yield TTSAudioRawFrame(
                audio[off : off + step], self.sample_rate, 1, context_id=context_id
            )
            # A real streaming TTS delivers faster than real time; the output
            # transport paces playback. Yield so other sessions get the loop.
            await asyncio.sleep(0)
