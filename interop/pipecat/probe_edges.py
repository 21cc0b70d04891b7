#!/usr/bin/env python3
"""Probe how the Pipecat Twilio bot reacts to off-script callers (README's 'gotchas').

    python probe_edges.py --url ws://127.0.0.1:PORT/ws

Each case opens one connection, sends a few messages, and reports what came back
and how (and how fast) the bot closed the socket.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import time
import uuid

import websockets

SILENCE = base64.b64encode(b"\xff" * 160).decode()


def start_msg(sid, with_call_sid=True):
    s = {
        "accountSid": "AC" + "0" * 32,
        "streamSid": sid,
        "tracks": ["inbound"],
        "customParameters": {},
        "mediaFormat": {"encoding": "audio/x-mulaw", "sampleRate": 8000, "channels": 1},
    }
    if with_call_sid:
        s["callSid"] = "CA" + uuid.uuid4().hex
    return {"event": "start", "sequenceNumber": "1", "start": s, "streamSid": sid}


def media(sid, payload=SILENCE):
    return {"event": "media", "sequenceNumber": "2", "media": {"track": "inbound", "chunk": "1", "timestamp": "0", "payload": payload}, "streamSid": sid}


CONNECTED = {"event": "connected", "protocol": "Call", "version": "1.0.0"}


async def case(url, name, script, listen=1.5):
    sid = "MZ" + uuid.uuid4().hex
    got = []
    t0 = time.monotonic()
    closed = None
    try:
        async with websockets.connect(url, ping_interval=None) as ws:
            for item in script(sid):
                if isinstance(item, (bytes, str)):
                    await ws.send(item)  # raw frame: bytes -> binary, str -> text as is
                elif isinstance(item, (int, float)):
                    await asyncio.sleep(item)
                else:
                    await ws.send(json.dumps(item))
            try:
                while True:
                    m = await asyncio.wait_for(ws.recv(), listen)
                    got.append(json.loads(m).get("event") if isinstance(m, str) else "<binary>")
            except asyncio.TimeoutError:
                closed = "still open"
            except websockets.ConnectionClosed as e:
                closed = f"closed by bot after {time.monotonic() - t0:.2f}s: code={e.rcvd.code if e.rcvd else None}"
    except Exception as e:
        closed = f"error {e.__class__.__name__}: {e}"
    print(f"{name:45s} -> received {sorted(set(got)) or '[]'}; {closed}", flush=True)


async def main(url):
    cases = [
        ("connected, start, media", lambda s: [CONNECTED, start_msg(s)] + [media(s)] * 5),
        ("start only (no connected), media", lambda s: [start_msg(s)] + [media(s)] * 5),
        ("connected, media before start", lambda s: [CONNECTED, media(s), start_msg(s)] + [media(s)] * 5),
        ("start without callSid", lambda s: [CONNECTED, start_msg(s, with_call_sid=False)] + [media(s)] * 5),
        ("binary frame (valid UTF-8) after start", lambda s: [CONNECTED, start_msg(s), media(s), 0.3, b"\x00\x01\x02"]),
        ("binary frame (raw mu-law) after start", lambda s: [CONNECTED, start_msg(s), media(s), 0.3, b"\xff" * 160]),
        ("binary frame (JSON media) after start", lambda s: [CONNECTED, start_msg(s), media(s), 0.3, json.dumps(media(s)).encode()] + [media(s)] * 3),
        ("invalid base64 payload after start", lambda s: [CONNECTED, start_msg(s), media(s), 0.3, media(s, "!!notbase64")]),
        ("non-JSON text after start", lambda s: [CONNECTED, start_msg(s), media(s), 0.3, "hello"]),
        ("JSON that is not an object after start", lambda s: [CONNECTED, start_msg(s), media(s), 0.3, "[1, 2]"]),
        ("media without payload after start", lambda s: [CONNECTED, start_msg(s), media(s), 0.3, {"event": "media", "streamSid": s, "media": {}}]),
        ("unknown event after start", lambda s: [CONNECTED, start_msg(s), media(s), 0.3, {"event": "bogus", "streamSid": s}]),
        ("stop event", lambda s: [CONNECTED, start_msg(s), media(s), 0.3, {"event": "stop", "streamSid": s, "stop": {}}]),
        ("binary as first message", lambda s: [b"\x00\x01"]),
    ]
    for name, script in cases:
        await case(url, name, script)


if __name__ == "__main__":
    p = argparse.ArgumentParser()
    p.add_argument("--url", required=True)
    asyncio.run(main(p.parse_args().url))
