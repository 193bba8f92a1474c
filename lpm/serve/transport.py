"""The WebSocket transport of one session: receive, pace, write (protocol in `protocol.py`).

Three tasks per connection and one generator thread:

    pump thread  SessionEngine.chunks() -> ``chunks`` queue (call_soon_threadsafe)
    receiver     client messages -> LiveSession.handle_*; protocol errors answered, never fatal
    pacer        each chunk at its deadline: state / chunk events, agent audio, 24 JPEG frames
                 spaced 1/fps apart
    writer       the only task that writes to the socket; a bounded queue, so a client that stops
                 reading loses whole chunks (``lpm_chunks_dropped_total``), never memory
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time

import numpy as np
from starlette.websockets import WebSocket, WebSocketDisconnect

from lpm.serve.engine import ServedChunk
from lpm.serve.protocol import (
    KIND_AGENT_AUDIO,
    KIND_JPEG,
    PROTOCOL_VERSION,
    ProtocolError,
    event,
    media_frame,
)
from lpm.serve.session import LiveSession, SessionManager

log = logging.getLogger(__name__)

WIRE_LIMIT = 96
"""Messages waiting for the socket (about 4 chunks of frames) before chunks are dropped."""


class Connection:
    """One attached WebSocket; `run` returns when the session ends for any reason."""

    def __init__(self, ws: WebSocket, session: LiveSession, manager: SessionManager) -> None:
        self.ws, self.session, self.manager = ws, session, manager
        self.engine = session.engine
        self.metrics = manager.metrics
        self.wire: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.chunks: asyncio.Queue[ServedChunk | None] = asyncio.Queue()
        self.state = "warmup"
        self.reason = "closed"

    def say(self, kind: str, **fields) -> None:
        """Queue a JSON event (dropped when the client is not reading)."""
        if self.wire.qsize() < WIRE_LIMIT * 2:
            self.wire.put_nowait(event(kind, **fields))

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        s, model = self.session, self.manager.model
        spec = model.bundle.spec
        self.engine.notify = lambda ev: loop.call_soon_threadsafe(self._notify, ev)
        self.say(
            "ready",
            protocol=PROTOCOL_VERSION,
            session=s.id,
            model=model.name,
            random_weights=model.random_weights,
            fps=self.engine.fps,
            width=spec.width,
            height=spec.height,
            chunk_seconds=self.engine.chunk_s,
            sample_rate=self.engine.rate,
            video_codec="jpeg",
            agent_audio={"codec": "pcm16", "sample_rate": self.engine.rate, "channels": 1},
            demo_agent=s.agent is not None,
        )
        self.say("state", state="warmup", chunk=0, pts=0.0)

        def deliver(chunk: ServedChunk | None) -> None:
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                loop.call_soon_threadsafe(self.chunks.put_nowait, chunk)

        pump = threading.Thread(target=s.pump, args=(deliver,), daemon=True, name=f"lpm-{s.id}")
        pump.start()
        tasks = [
            asyncio.create_task(self._receiver()),
            asyncio.create_task(self._pacer()),
            asyncio.create_task(self._limit()),
            asyncio.create_task(self._ended()),
        ]
        writer = asyncio.create_task(self._writer())
        try:
            await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for t in tasks:
                t.cancel()
            s.ended.set()
            self.manager.end(s, self.reason)
            self.say("end", reason=self.reason)
            self.wire.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, timeout=2.0)
            writer.cancel()
            await asyncio.to_thread(pump.join, 15.0)
            with contextlib.suppress(Exception):
                await self.ws.close()

    async def _ended(self) -> None:
        # polled, not awaited in a worker thread: one blocked thread per session would exhaust
        # the default executor that session creation also needs
        while not self.session.ended.is_set():
            await asyncio.sleep(0.1)

    def _notify(self, ev: dict) -> None:
        self.say(ev.pop("type"), **ev)

    async def _receiver(self) -> None:
        while True:
            try:
                msg = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                msg = {"type": "websocket.disconnect"}
            if msg["type"] == "websocket.disconnect":
                self.reason = "disconnected"
                return
            try:
                if msg.get("text") is not None:
                    reply = self.session.handle_text(msg["text"])
                    if reply is not None:
                        self.say(reply.pop("type"), **reply)
                elif msg.get("bytes") is not None:
                    self.session.handle_binary(msg["bytes"])
            except ProtocolError as err:
                self.metrics.rejected.inc(code=err.code)
                self.say("error", code=err.code, message=str(err), fatal=False)
            except Exception:  # a bug must not take the session down with it
                log.exception("session %s: message handling failed", self.session.id)
                self.metrics.rejected.inc(code="internal")
                self.say("error", code="internal", message="internal error", fatal=False)
            if self.session.ended.is_set():
                self.reason = "client_end"
                return

    async def _limit(self) -> None:
        left = self.session.cfg.max_session_s - (time.monotonic() - self.session.created)
        await asyncio.sleep(max(0.0, left))
        self.reason = "session_limit"

    async def _pacer(self) -> None:
        while (chunk := await self.chunks.get()) is not None:
            await asyncio.sleep(max(0.0, chunk.deadline - time.monotonic()))
            if self.wire.qsize() > WIRE_LIMIT:
                self.metrics.chunks_dropped.inc()
                continue
            self._chunk_header(chunk)
            fps = self.engine.fps
            for i, jpeg in enumerate(chunk.jpegs):
                await asyncio.sleep(max(0.0, chunk.deadline + i / fps - time.monotonic()))
                self.wire.put_nowait(
                    media_frame(KIND_JPEG, chunk.index, i, chunk.pts + i / fps, jpeg)
                )
            self.metrics.frames.inc(len(chunk.jpegs))
        self.reason = "generation_stopped" if not self.session.ended.is_set() else self.reason

    def _chunk_header(self, chunk: ServedChunk) -> None:
        if chunk.state != self.state:
            self.state = chunk.state
            self.say("state", state=chunk.state, chunk=chunk.index, pts=chunk.pts)
        self.say(
            "chunk",
            chunk=chunk.index,
            pts=chunk.pts,
            state=chunk.state,
            timings={k: round(v, 4) for k, v in chunk.timings.items()},
            latency={k: round(v, 4) for k, v in chunk.latency.items()},
        )
        if chunk.speak is not None:
            pcm = (np.clip(chunk.speak, -1, 1) * 32767).astype("<i2").tobytes()
            self.wire.put_nowait(media_frame(KIND_AGENT_AUDIO, chunk.index, 0, chunk.pts, pcm))

    async def _writer(self) -> None:
        while (item := await self.wire.get()) is not None:
            try:
                if isinstance(item, bytes):
                    await self.ws.send_bytes(item)
                else:
                    await self.ws.send_text(item)
            except (WebSocketDisconnect, RuntimeError, OSError):
                self.session.ended.set()
                return


def close_reason(code: str, message: str) -> str:
    """A close-frame reason (≤ 123 bytes) carrying a JSON error."""
    return json.dumps({"code": code, "message": message})[:123]
