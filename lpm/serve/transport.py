"""Session transports: what every transport shares, and the WebSocket one (protocol.py).

A transport attaches a client to one `LiveSession` and only moves bytes. `SessionTransport`
runs one generator thread and four tasks per attached session:

    pump thread  SessionEngine.chunks() -> `encode_frames` -> ``chunks`` queue
                 (call_soon_threadsafe)
    receiver     client input -> LiveSession.handle_*; protocol errors answered, never fatal;
                 returns when the client is gone
    pacer        each chunk at its deadline: state / chunk events, agent audio, then the frames
                 spaced 1/fps apart
    writer       the only task that writes events (and, on the WebSocket, media) to the client;
                 a bounded queue, so a client that stops reading loses whole chunks
                 (``lpm_chunks_dropped_total``), never memory

`WebSocketTransport` sends JPEG frames and PCM16 agent audio as binary messages on the session
WebSocket; `lpm.serve.webrtc.WebRTCTransport` sends them as WebRTC media tracks.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
import time

import cv2
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
"""Messages waiting for the client (about 4 chunks of frames) before chunks are dropped."""


class SessionTransport:
    """One attached client; `run` returns when the session ends for any reason.

    Subclasses implement `receive`, `send`, `encode_frames`, `send_agent_audio`, `send_frame` and
    may extend `close`.
    """

    name = "none"
    """Transport named in the ``ready`` event."""
    video_codec = "none"
    """Codec named in the ``ready`` event."""

    def __init__(self, session: LiveSession, manager: SessionManager) -> None:
        self.session, self.manager = session, manager
        self.engine = session.engine
        self.metrics = manager.metrics
        self.wire: asyncio.Queue[str | bytes | None] = asyncio.Queue()
        self.chunks: asyncio.Queue[tuple[ServedChunk, list] | None] = asyncio.Queue()
        self.state = "warmup"
        self.reason = "closed"

    # ---- what a transport implements ----------------------------------------------------------
    async def receive(self) -> None:
        """Apply client input until the client is gone (then set ``reason`` and return)."""
        raise NotImplementedError

    async def send(self, item: str | bytes) -> bool:
        """Write one queued event or message to the client; False when the client is gone."""
        raise NotImplementedError

    def encode_frames(self, frames: np.ndarray) -> list:
        """(F, H, W, 3) uint8 RGB -> one payload per frame; runs in the pump thread."""
        raise NotImplementedError

    def send_agent_audio(self, chunk: ServedChunk, speak: np.ndarray) -> None:
        """Queue a chunk's agent audio (float32 at the model rate) to play with its first frame."""
        raise NotImplementedError

    def send_frame(self, chunk: ServedChunk, i: int, payload) -> None:
        """Queue frame ``i`` of ``chunk``, due now."""
        raise NotImplementedError

    def congested(self) -> bool:
        """Whether the client is so far behind that the next chunk should be skipped."""
        return self.wire.qsize() > WIRE_LIMIT

    async def close(self) -> None:
        """Release the client connection (after the final events are written)."""

    # ---- shared -------------------------------------------------------------------------------
    def say(self, kind: str, **fields) -> None:
        """Queue a JSON event (dropped when the client is not reading)."""
        if self.wire.qsize() < WIRE_LIMIT * 2:
            self.wire.put_nowait(event(kind, **fields))

    def handle_message(self, text: str | None = None, data: bytes | None = None) -> None:
        """Apply one client message of the session protocol, answering errors with events."""
        try:
            if text is not None:
                reply = self.session.handle_text(text)
                if reply is not None:
                    self.say(reply.pop("type"), **reply)
            elif data is not None:
                self.session.handle_binary(data)
        except ProtocolError as err:
            self.metrics.rejected.inc(code=err.code)
            self.say("error", code=err.code, message=str(err), fatal=False)
        except Exception:  # a bug must not take the session down with it
            log.exception("session %s: message handling failed", self.session.id)
            self.metrics.rejected.inc(code="internal")
            self.say("error", code="internal", message="internal error", fatal=False)
        if self.session.ended.is_set() and self.reason == "closed":
            self.reason = "client_end"

    def ready_fields(self) -> dict:
        """The ``ready`` event's fields."""
        s, model = self.session, self.manager.model
        spec = model.bundle.spec
        return dict(
            protocol=PROTOCOL_VERSION,
            session=s.id,
            model=model.name,
            random_weights=model.random_weights,
            fps=self.engine.fps,
            width=spec.width,
            height=spec.height,
            chunk_seconds=self.engine.chunk_s,
            sample_rate=self.engine.rate,
            transport=self.name,
            video_codec=self.video_codec,
            agent_audio={"codec": "pcm16", "sample_rate": self.engine.rate, "channels": 1},
            demo_agent=s.agent is not None,
        )

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        s = self.session
        self.engine.notify = lambda ev: loop.call_soon_threadsafe(self._notify, ev)
        self.say("ready", **self.ready_fields())
        self.say("state", state="warmup", chunk=0, pts=0.0)

        def deliver(chunk: ServedChunk | None) -> None:
            item = None if chunk is None else (chunk, self.encode_frames(chunk.frames))
            with contextlib.suppress(RuntimeError):  # loop closed during shutdown
                loop.call_soon_threadsafe(self.chunks.put_nowait, item)

        pump = threading.Thread(target=s.pump, args=(deliver,), daemon=True, name=f"lpm-{s.id}")
        pump.start()
        tasks = [
            asyncio.create_task(self.receive()),
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
            await asyncio.gather(*tasks, return_exceptions=True)
            s.ended.set()
            self.manager.end(s, self.reason)
            self.say("end", reason=self.reason)
            self.wire.put_nowait(None)
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer, timeout=2.0)
            writer.cancel()
            await asyncio.to_thread(pump.join, 15.0)
            with contextlib.suppress(Exception):
                await self.close()

    async def _ended(self) -> None:
        # polled, not awaited in a worker thread: one blocked thread per session would exhaust
        # the default executor that session creation also needs
        while not self.session.ended.is_set():
            await asyncio.sleep(0.1)

    def _notify(self, ev: dict) -> None:
        self.say(ev.pop("type"), **ev)

    async def _limit(self) -> None:
        left = self.session.cfg.max_session_s - (time.monotonic() - self.session.created)
        await asyncio.sleep(max(0.0, left))
        self.reason = "session_limit"

    async def _pacer(self) -> None:
        while (item := await self.chunks.get()) is not None:
            chunk, payloads = item
            await asyncio.sleep(max(0.0, chunk.deadline - time.monotonic()))
            if self.congested():
                self.metrics.chunks_dropped.inc()
                continue
            self._chunk_header(chunk)
            fps = self.engine.fps
            for i, payload in enumerate(payloads):
                await asyncio.sleep(max(0.0, chunk.deadline + i / fps - time.monotonic()))
                self.send_frame(chunk, i, payload)
            self.metrics.frames.inc(len(payloads))
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
            self.send_agent_audio(chunk, chunk.speak)

    async def _writer(self) -> None:
        while (item := await self.wire.get()) is not None:
            if not await self.send(item):
                self.session.ended.set()
                return


class WebSocketTransport(SessionTransport):
    """The session WebSocket: JSON events, binary JPEG frames and PCM16 agent audio."""

    name = "websocket"
    video_codec = "jpeg"

    def __init__(self, ws: WebSocket, session: LiveSession, manager: SessionManager) -> None:
        super().__init__(session, manager)
        self.ws = ws
        self.quality = [int(cv2.IMWRITE_JPEG_QUALITY), session.cfg.jpeg_quality]

    async def receive(self) -> None:
        while True:
            try:
                msg = await self.ws.receive()
            except (WebSocketDisconnect, RuntimeError):
                msg = {"type": "websocket.disconnect"}
            if msg["type"] == "websocket.disconnect":
                self.reason = "disconnected"
                return
            self.handle_message(msg.get("text"), msg.get("bytes"))
            if self.session.ended.is_set():
                return

    async def send(self, item: str | bytes) -> bool:
        try:
            if isinstance(item, bytes):
                await self.ws.send_bytes(item)
            else:
                await self.ws.send_text(item)
        except (WebSocketDisconnect, RuntimeError, OSError):
            return False
        return True

    def encode_frames(self, frames: np.ndarray) -> list[bytes]:
        return [cv2.imencode(".jpg", f[:, :, ::-1], self.quality)[1].tobytes() for f in frames]

    def send_agent_audio(self, chunk: ServedChunk, speak: np.ndarray) -> None:
        pcm = (np.clip(speak, -1, 1) * 32767).astype("<i2").tobytes()
        self.wire.put_nowait(media_frame(KIND_AGENT_AUDIO, chunk.index, 0, chunk.pts, pcm))

    def send_frame(self, chunk: ServedChunk, i: int, payload: bytes) -> None:
        pts = chunk.pts + i / self.engine.fps
        self.wire.put_nowait(media_frame(KIND_JPEG, chunk.index, i, pts, payload))

    async def close(self) -> None:
        await self.ws.close()


def close_reason(code: str, message: str) -> str:
    """A close-frame reason (≤ 123 bytes) carrying a JSON error."""
    return json.dumps({"code": code, "message": message})[:123]
