"""A scripted protocol client for latency benchmarks, soak runs and tests.

Each simulated user repeats a 10-s conversation cycle against one session:

    0.0 s   quiet                       (character idles)
    1.0 s   user speech, sent in real time  -> time to the first *listening* frame
    5.5 s   agent speech, sent at once (like a TTS reply) -> time to the first *responding* frame

Latencies are measured on the client: from the first audio sample sent to the first video frame
of a chunk whose ``chunk`` event carries the expected state.
"""

from __future__ import annotations

import asyncio
import json
import time
import urllib.request
from dataclasses import dataclass, field

import numpy as np

from lpm.serve.protocol import KIND_JPEG, parse_media_frame

CYCLE_S = 10.0
USER_AT_S, AGENT_AT_S = 1.0, 5.5


@dataclass
class SessionTrace:
    """What one simulated user saw."""

    frames: int = 0
    chunks: int = 0
    late: int = 0
    """Chunks whose ``slack_s`` was negative (ready after their deadline)."""
    listen_latency_s: list[float] = field(default_factory=list)
    respond_latency_s: list[float] = field(default_factory=list)
    first_frame_s: float | None = None
    """Session creation to the first video frame (warm-up)."""
    fps: float = 0.0
    """Frames per second received after warm-up."""
    errors: list[dict] = field(default_factory=list)


def create_session(base_url: str, body: dict, token: str | None = None) -> dict:
    headers = {"Content-Type": "application/json"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    req = urllib.request.Request(base_url + "/v1/sessions", json.dumps(body).encode(), headers)
    with urllib.request.urlopen(req, timeout=120) as r:
        return json.loads(r.read())


def _pcm16(samples: np.ndarray) -> bytes:
    return (np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes()


class _User:
    def __init__(self, ws, user: np.ndarray, agent: np.ndarray, rate: int) -> None:
        self.ws, self.user, self.agent, self.rate = ws, user, agent, rate
        self.trace = SessionTrace()
        self.chunk_state: dict[int, str] = {}
        self.waiting: tuple[str, float] | None = None
        self.frame_times: list[float] = []

    async def read(self, t_created: float, t_end: float) -> None:
        await self._read(t_created, t_end)
        if not self.frame_times:
            return
        steady = [t for t in self.frame_times if t >= self.frame_times[0] + 2.0]
        if len(steady) > 1:  # after a 2-s warm-up, up to the end of the run
            self.trace.fps = (len(steady) - 1) / (t_end - steady[0])

    async def _read(self, t_created: float, t_end: float) -> None:
        tr = self.trace
        while time.monotonic() < t_end:
            try:
                msg = await asyncio.wait_for(self.ws.recv(), timeout=t_end - time.monotonic())
            except TimeoutError:
                return
            now = time.monotonic()
            if isinstance(msg, str):
                ev = json.loads(msg)
                if ev["type"] == "chunk":
                    tr.chunks += 1
                    self.chunk_state[ev["chunk"]] = ev["state"]
                    tr.late += ev["chunk"] > 0 and ev["latency"]["slack_s"] < 0
                elif ev["type"] == "error":
                    tr.errors.append(ev)
                continue
            kind, chunk, _frame, _pts, _ = parse_media_frame(msg)
            if kind != KIND_JPEG:
                continue
            tr.frames += 1
            self.frame_times.append(now)
            if tr.first_frame_s is None:
                tr.first_frame_s = now - t_created
            if self.waiting and self.chunk_state.get(chunk) == self.waiting[0]:
                state, t0 = self.waiting
                out = tr.listen_latency_s if state == "listening" else tr.respond_latency_s
                out.append(now - t0)
                self.waiting = None

    async def talk(self, t_end: float) -> None:
        step = int(0.02 * self.rate)
        start = time.monotonic()
        while time.monotonic() < t_end:
            cycle = start + CYCLE_S * int((time.monotonic() - start) // CYCLE_S)
            await asyncio.sleep(max(0.0, cycle + USER_AT_S - time.monotonic()))
            t0 = time.monotonic()
            self.waiting = ("listening", t0)
            for i in range(0, len(self.user), step):  # real time, 20-ms frames
                await asyncio.sleep(max(0.0, t0 + i / self.rate - time.monotonic()))
                await self.ws.send(b"\x01" + _pcm16(self.user[i : i + step]))
            await asyncio.sleep(max(0.0, cycle + AGENT_AT_S - time.monotonic()))
            self.waiting = ("responding", time.monotonic())
            for i in range(0, len(self.agent), 8000):
                await self.ws.send(b"\x02" + _pcm16(self.agent[i : i + 8000]))
            await asyncio.sleep(max(0.0, cycle + CYCLE_S - time.monotonic()))


async def drive_session(
    base_url: str, seconds: float, user: np.ndarray, agent: np.ndarray, *, rate: int = 16000
) -> SessionTrace:
    """One simulated user for ``seconds`` against a fresh session; returns its trace."""
    import websockets

    t_created = time.monotonic()
    created = await asyncio.to_thread(create_session, base_url, {"character": "stage-090000"})
    ws_url = base_url.replace("http://", "ws://") + created["websocket"]
    async with websockets.connect(ws_url, max_size=2**22) as ws:
        u = _User(ws, user, agent, rate)
        t_end = time.monotonic() + seconds
        talker = asyncio.create_task(u.talk(t_end))
        await u.read(t_created, t_end)
        talker.cancel()
        await ws.send(json.dumps({"type": "end"}))
    return u.trace


async def drive_many(
    base_url: str, sessions: int, seconds: float, user: np.ndarray, agent: np.ndarray
) -> list[SessionTrace]:
    """``sessions`` simulated users at once, started 0.3 s apart."""

    async def one(k: int) -> SessionTrace:
        await asyncio.sleep(0.3 * k)
        return await drive_session(base_url, seconds, user, agent)

    return list(await asyncio.gather(*(one(k) for k in range(sessions))))


def rss_mb() -> float:
    """Resident memory of this process (MB), from /proc."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")
