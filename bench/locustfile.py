"""The `planrun bench` workload, written for Locust (gevent) + websocket-client.

Each Locust user runs a closed loop of calls against a voice agent speaking planrun's raw
protocol (docs/protocols.md, "The raw protocol"), exactly as `planrun bench` does (src/bench.rs):

  connect -> stream 1 s of a 220 Hz tone (PCM16 LE mono 16 kHz, RMS -20 dBFS, 5 ms fades) as
  50 binary frames of 20 ms, frame i due at start + (i+1) * 20 ms on an absolute schedule
  -> send {"type":"speech_end"} -> time to the first binary reply frame (TTFA) -> read every
  message until {"type":"response_end"} -> close -> think 300 ms (Locust's wait_time) -> repeat.

It records, per frame, the pacing lag (actual - scheduled send time) and, per call, TTFA
measured from the moment speech_end was sent (planrun's default reference: the last end of
speech). The agent answers exactly BENCH_DELAY_MS after speech_end, so TTFA - BENCH_DELAY_MS is
this client's measurement error.

Environment:
  BENCH_OUT        where to write the JSON result (default: locust-bench.json)
  BENCH_DELAY_MS   the agent's configured end-of-speech -> first-audio delay (default 200)
  BENCH_RAMP_S     the ramp, seconds (users start evenly over it; used for user-seconds)
  BENCH_AGENT_PID  the agent's pid, to report its CPU% over the run (optional)

One Locust process (no --processes) is one Python interpreter: one core at most.
"""

from array import array
import json
import math
import os
import resource
import struct
import time

import gevent
import websocket  # websocket-client; socket is monkey-patched by gevent through Locust
from locust import User, events, task, constant

RATE = 16000
FRAME_S = 0.020
FRAME_SAMPLES = int(RATE * FRAME_S)  # 320 samples = 640 bytes
UTTERANCE_S = 1.0
TONE_HZ = 220.0
LEVEL_DBFS = -20.0
THINK_S = 0.300
DELAY_MS = float(os.environ.get("BENCH_DELAY_MS", "200"))
OUT = os.environ.get("BENCH_OUT", "locust-bench.json")
RAMP_S = float(os.environ.get("BENCH_RAMP_S", "0"))
AGENT_PID = os.environ.get("BENCH_AGENT_PID")


def _tone_frames():
    """The same clip as planrun's `tone: 1s, freq: 220` (src/audio.rs `tone`), cut in 20 ms."""
    n = int(round(UTTERANCE_S * RATE))
    amplitude = 32768.0 * math.sqrt(2.0) * 10 ** (LEVEL_DBFS / 20.0)
    fade = min(int(round(0.005 * RATE)), n // 2)
    step = 2.0 * math.pi * TONE_HZ / RATE
    samples = []
    for i in range(n):
        edge = min(i, n - 1 - i)
        gain = 0.5 * (1.0 - math.cos(math.pi * edge / fade)) if edge < fade else 1.0
        v = int(round(amplitude * gain * math.sin(step * i)))
        samples.append(max(-32768, min(32767, v)))
    pcm = struct.pack("<%dh" % n, *samples)
    size = FRAME_SAMPLES * 2
    return [pcm[i : i + size] for i in range(0, len(pcm), size)]


FRAMES = _tone_frames()
SPEECH_END = json.dumps({"type": "speech_end"})


class Results:
    # Compact, not tracked by Python's GC (a list of ~10^6 floats makes full collections slow).
    lag_ms = array("d")  # one per paced frame
    ttfa_err_ms = array("d")  # one per answered call
    calls = 0
    failed_calls = 0
    failed_users = set()
    sent = 0
    received_audio = 0
    turns = 0
    users_started = 0
    errors = {}
    t0 = None
    cpu0 = None
    agent_ticks0 = None


R = Results


def _cpu_s():
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def _pid_ticks(pid):
    try:
        with open("/proc/%s/stat" % pid) as f:
            rest = f.read().rsplit(")", 1)[1].split()
        return int(rest[11]) + int(rest[12])
    except (OSError, IndexError, ValueError):
        return None


@events.test_start.add_listener
def _on_start(environment, **_kw):
    R.t0 = time.perf_counter()
    R.cpu0 = _cpu_s()
    if AGENT_PID:
        R.agent_ticks0 = _pid_ticks(AGENT_PID)


def _quantile(values, q):
    """Nearest rank, like an HDR histogram's value_at_quantile."""
    if not values:
        return float("nan")
    s = sorted(values)
    return s[max(0, min(len(s) - 1, math.ceil(q * len(s)) - 1))]


@events.quitting.add_listener
def _on_quit(environment, **_kw):
    if R.t0 is None:
        return
    wall = time.perf_counter() - R.t0
    cpu = _cpu_s() - R.cpu0
    users = environment.parsed_options.num_users if environment.parsed_options else R.users_started
    user_s = users * max(0.0, wall - RAMP_S / 2.0)  # as src/bench.rs counts user-seconds
    agent_cpu_pct = float("nan")
    if AGENT_PID and R.agent_ticks0 is not None:
        t1 = _pid_ticks(AGENT_PID)
        if t1 is not None:
            agent_cpu_pct = (t1 - R.agent_ticks0) / os.sysconf("SC_CLK_TCK") / wall * 100.0
    messages = R.sent + R.received_audio + R.turns
    out = {
        "tool": "locust",
        "users": users,
        "users_started": R.users_started,
        "sustained": users - len(R.failed_users),
        "calls": R.calls,
        "failed": R.failed_calls,
        "errors": R.errors,
        "wall_s": wall,
        "cpu_s": cpu,
        "user_s": user_s,
        "cpu_per_user_s": cpu / user_s if user_s > 0 else float("nan"),
        "us_per_msg": cpu * 1e6 / max(1, messages),
        "messages": messages,
        "msgs_per_s": messages / wall if wall > 0 else float("nan"),
        "lag_p50_ms": _quantile(R.lag_ms, 0.50),
        "lag_p99_ms": _quantile(R.lag_ms, 0.99),
        "lag_max_ms": max(R.lag_ms) if R.lag_ms else float("nan"),
        "ttfa_err_p50_ms": _quantile(R.ttfa_err_ms, 0.50),
        "ttfa_err_p99_ms": _quantile(R.ttfa_err_ms, 0.99),
        "ttfa_err_max_ms": max(R.ttfa_err_ms) if R.ttfa_err_ms else float("nan"),
        "agent_cpu_pct": agent_cpu_pct,
        "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
    }
    with open(OUT, "w") as f:
        json.dump(out, f, indent=2)


class VoiceUser(User):
    """One caller: a closed loop of single-turn calls."""

    wait_time = constant(THINK_S)

    def on_start(self):
        R.users_started += 1
        self.uid = R.users_started

    @task
    def call(self):
        now = time.perf_counter
        url = self.host
        failed = None
        ws = None
        try:
            ws = websocket.create_connection(url, timeout=30)
            start = now()
            for i, frame in enumerate(FRAMES):
                due = start + FRAME_S * (i + 1)
                wait = due - now()
                if wait > 0:
                    gevent.sleep(wait)
                R.lag_ms.append(max(0.0, now() - due) * 1000.0)
                ws.send_binary(frame)
                R.sent += 1
            ws.send(SPEECH_END)
            anchor = now()
            R.turns += 1
            first = None
            while True:
                opcode, data = ws.recv_data()
                if opcode == websocket.ABNF.OPCODE_BINARY:
                    if first is None:
                        first = now()
                        ttfa_ms = (first - anchor) * 1000.0
                        R.ttfa_err_ms.append(ttfa_ms - DELAY_MS)
                        events.request.fire(
                            request_type="WS",
                            name="ttfa",
                            response_time=ttfa_ms,
                            response_length=len(data),
                            exception=None,
                            context={},
                        )
                    R.received_audio += 1
                elif opcode == websocket.ABNF.OPCODE_TEXT:
                    msg = json.loads(data)
                    kind = msg.get("type")
                    if kind == "response_end":
                        break
                    if kind == "error":
                        raise RuntimeError("server error: %s" % msg.get("message"))
                elif opcode == websocket.ABNF.OPCODE_CLOSE:
                    raise RuntimeError("connection closed before response_end")
            if first is None:
                raise RuntimeError("response_end without audio")
        except Exception as e:  # noqa: BLE001 - every failure counts as a failed call
            failed = "%s: %s" % (type(e).__name__, e)
        finally:
            if ws is not None:
                try:
                    ws.close()
                except Exception:  # noqa: BLE001
                    pass
        R.calls += 1
        if failed:
            R.failed_calls += 1
            R.failed_users.add(self.uid)
            key = failed[:120]
            R.errors[key] = R.errors.get(key, 0) + 1
            events.request.fire(
                request_type="WS",
                name="call",
                response_time=0,
                response_length=0,
                exception=RuntimeError(failed),
                context={},
            )
