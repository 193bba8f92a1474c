"""Fixtures of the serve tests: a tiny random online model, a server on loopback, speech audio."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest

from lpm.serve.config import ServeConfig
from lpm.serve.loading import ServedModel
from lpm.serve.server import BackgroundServer
from tests.inference.test_streaming import online_bundle

RATE = 16000


@pytest.fixture(scope="session")
def tiny_model() -> ServedModel:
    return ServedModel(online_bundle(), "tiny-online (random weights)", True)


def start_server(model: ServedModel, **overrides) -> BackgroundServer:
    cfg = ServeConfig(port=0, **overrides)
    assert cfg.host == "127.0.0.1"
    return BackgroundServer(model, cfg)


@pytest.fixture
def server(tiny_model) -> Iterator[BackgroundServer]:
    with start_server(tiny_model, max_sessions=3) as srv:
        yield srv


def http(method: str, url: str, body: dict | None = None, token: str | None = None):
    """(status, parsed JSON or text) of one request."""
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data, headers, method=method)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            raw, status = r.read(), r.status
    except urllib.error.HTTPError as err:
        raw, status = err.read(), err.code
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


def speech(seconds_of_text: str = "Hello there, how are you doing today?") -> np.ndarray:
    """Real synthetic speech (espeak-ng or the formant synthesizer), float32 at 16 kHz."""
    from lpm.data.stage import make_character
    from lpm.data.stage.speech import synthesize

    return synthesize(seconds_of_text, make_character(90_004).voice, RATE)


def pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


class Client:
    """A blocking WebSocket client of one session that records every event and frame."""

    def __init__(self, srv: BackgroundServer, created: dict) -> None:
        from websockets.sync.client import connect

        self.created = created
        self.ws = connect(f"ws://127.0.0.1:{srv.port}{created['websocket']}", max_size=2**22)
        self.events: list[dict] = []
        self.frames: list[tuple[int, int, float]] = []
        self.audio_chunks = 0

    def send_json(self, **msg) -> None:
        self.ws.send(json.dumps(msg))

    def send_audio(self, stream: int, samples: np.ndarray, frame_s: float = 0.02) -> None:
        step = int(frame_s * RATE)
        for i in range(0, len(samples), step):
            self.ws.send(bytes([stream]) + pcm16(samples[i : i + step]))

    def until(self, predicate, timeout: float = 15.0) -> dict:
        """Read until an event satisfies ``predicate``; returns it (AssertionError on timeout)."""
        import time

        from lpm.serve.protocol import parse_media_frame

        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                msg = self.ws.recv(timeout=max(0.01, end - time.monotonic()))
            except TimeoutError:
                break
            if isinstance(msg, bytes):
                kind, chunk, frame, pts, _ = parse_media_frame(msg)
                if kind == 0x10:
                    self.frames.append((chunk, frame, pts))
                else:
                    self.audio_chunks += 1
                continue
            ev = json.loads(msg)
            self.events.append(ev)
            if predicate(ev):
                return ev
        raise AssertionError(f"no matching event within {timeout} s; got {self.events[-8:]}")

    def close(self) -> None:
        self.ws.close()


def new_session(srv: BackgroundServer, **body) -> dict:
    status, created = http("POST", srv.url + "/v1/sessions", {"character": "stage-090000", **body})
    assert status == 201, created
    return created
