"""1,000 malformed or hostile messages never crash the server or disturb another session."""

from __future__ import annotations

import contextlib
import json
import random
import socket
import threading
import time

import numpy as np
import pytest

from tests.serve.conftest import Client, http, new_session, pcm16, start_server


def hostile_messages(rng: random.Random, max_bytes: int):
    """Yield (kind, payload) pairs: text or bytes the protocol must refuse or survive."""
    texts = [
        "{",
        "null",
        "[]",
        '"just a string"',
        "{}",
        '{"type": 5}',
        '{"type": "nope"}',
        '{"type": "prompt"}',
        '{"type": "prompt", "text": 12}',
        '{"type": "prompt", "text": "%s"}' % ("y" * 3000),
        '{"type": "audio.format", "stream": "user", "sample_rate": 1000000000}',
        '{"type": "audio.format", "stream": "user", "sample_rate": 0}',
        '{"type": "audio.format", "stream": "agent", "sample_rate": -16000}',
        '{"type": "audio.format", "stream": "user", "codec": "mp3"}',
        '{"type": "audio.format", "stream": "user", "codec": "opus", "sample_rate": 44100}',
        '{"type": "audio.format", "stream": "user", "channels": 9}',
        '{"type": "ping", "id": {"deep": [1, 2, 3]}}',
        '{"type": "interrupt", "extra": true}',
        "[" * 5000 + "]" * 5000,
        json.dumps({"type": "prompt", "text": "\u0000\ud7ff" * 10}),
    ]
    for i in range(1000):
        pick = i % 6
        if pick in (0, 1):
            yield "text", rng.choice(texts)
        elif pick == 2:
            yield "bytes", bytes([rng.choice([0, 3, 255])]) + rng.randbytes(rng.randint(0, 64))
        elif pick == 3:
            yield "bytes", bytes([rng.choice([1, 2])]) + rng.randbytes(2 * rng.randint(0, 200) + 1)
        elif pick == 4:
            yield "bytes", b"\x01" + rng.randbytes(max_bytes + rng.randint(1, 1000))
        else:  # far faster than real time: 0.45 s of agent audio per message, back to back
            yield "bytes", b"\x02" + pcm16(np.zeros(7200, np.float32))


def abrupt_disconnect(srv) -> None:
    """Open a session, start streaming, then drop the TCP connection without a close frame."""
    c = Client(srv, new_session(srv))
    c.until(lambda e: e["type"] == "chunk")
    c.ws.socket.shutdown(socket.SHUT_RDWR)
    c.ws.socket.close()


@pytest.mark.slow
def test_thousand_hostile_messages(tiny_model):
    with start_server(tiny_model, max_sessions=4, max_message_bytes=16384) as srv:
        victim = Client(srv, new_session(srv))
        victim.until(lambda e: e["type"] == "chunk")
        watched: dict = {}

        def watch() -> None:
            t0, n0 = time.monotonic(), len(victim.frames)
            with contextlib.suppress(AssertionError):  # just read for 10 s
                victim.until(lambda e: False, timeout=10)
            watched["fps"] = (len(victim.frames) - n0) / (time.monotonic() - t0)

        watcher = threading.Thread(target=watch)
        watcher.start()
        attacker = Client(srv, new_session(srv))
        rng, sent, reconnects = random.Random(0), 0, 0
        for _kind, payload in hostile_messages(rng, 16384):
            try:
                attacker.ws.send(payload)
            except Exception:  # the server may close a socket that sent a huge frame
                attacker = Client(srv, new_session(srv))
                reconnects += 1
            sent += 1
            if sent % 250 == 0:
                abrupt_disconnect(srv)
        attacker.send_json(type="ping", id="last")  # messages are handled in order
        attacker.until(lambda e: e["type"] == "pong" and e["id"] == "last", timeout=30)
        watcher.join()
        assert sent == 1000
        assert http("GET", srv.url + "/healthz")[0] == 200
        errors = [e for e in attacker.events if e["type"] == "error"]
        assert errors and all(not e["fatal"] for e in errors)
        _, metrics = http("GET", srv.url + "/metrics")
        assert 'code="internal"' not in metrics
        assert 'code="bad_json"' in metrics and 'code="audio_rate"' in metrics
        # the victim kept real-time video while all this happened
        assert watched["fps"] > 20, watched
        states = victim.until(lambda e: e["type"] == "chunk")
        assert states["latency"]["slack_s"] > -0.5
        victim.close()
        time.sleep(1.5)
        assert http("GET", srv.url + "/healthz")[1]["sessions"] <= 1
