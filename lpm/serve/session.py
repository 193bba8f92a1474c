"""Live sessions and the manager that creates, limits and reaps them.

A `LiveSession` owns one `SessionEngine`, the decoders and meters of its two audio streams and,
optionally, the demo agent. Client messages are applied here (`handle_text`, `handle_binary`);
transports (WebSocket, WebRTC) only move bytes.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from lpm.inference import ReferenceImage
from lpm.serve.audio import AudioDecoder, AudioMeter
from lpm.serve.characters import DemoAgent
from lpm.serve.config import ServeConfig
from lpm.serve.engine import ServedChunk, SessionEngine
from lpm.serve.loading import ServedModel
from lpm.serve.metrics import ServeMetrics
from lpm.serve.protocol import (
    AgentSay,
    AudioFormat,
    End,
    Interrupt,
    Ping,
    Prompt,
    ProtocolError,
    parse_client_text,
    split_binary,
)
from lpm.serve.scheduler import FairScheduler

log = logging.getLogger(__name__)


class Busy(RuntimeError):
    """The server already runs its maximum number of sessions."""


@dataclass(frozen=True)
class SessionSpec:
    """What a session is created with (validated by the HTTP layer)."""

    image: np.ndarray
    """(H, W, 3) uint8 RGB character image."""
    references: Sequence[ReferenceImage] = ()
    persona: str = ""
    character_id: str | None = None
    demo_agent: object | None = None
    """The Stage `Character` whose voice the demo agent speaks with; None: no demo agent."""


class LiveSession:
    """One character stream and its inputs; see the module docstring."""

    def __init__(
        self, engine: SessionEngine, spec: SessionSpec, config: ServeConfig, metrics: ServeMetrics
    ) -> None:
        self.id = secrets.token_hex(8)
        self.key = secrets.token_urlsafe(16)
        self.engine, self.spec, self.cfg, self.metrics = engine, spec, config, metrics
        self.created = time.monotonic()
        self.attached = False
        self.ended = threading.Event()
        default = AudioFormat(type="audio.format", stream="user")
        self.decoders = {s: AudioDecoder(default, engine.rate) for s in ("user", "agent")}
        self.meters = {s: AudioMeter(config.max_audio_burst_s) for s in ("user", "agent")}
        self.agent = (
            DemoAgent(spec.demo_agent, engine.rate, engine.push_agent)
            if spec.demo_agent is not None
            else None
        )

    # ---- client messages --------------------------------------------------------------------
    def handle_text(self, text: str) -> dict | None:
        """Apply one JSON message; returns the event to answer with, if any.

        Raises:
            ProtocolError: the message is malformed or not allowed now.
        """
        if len(text) > self.cfg.max_message_bytes:
            raise ProtocolError(
                "too_large", f"messages are limited to {self.cfg.max_message_bytes}"
            )
        msg = parse_client_text(text, self.cfg.max_text_chars)
        self.metrics.messages.inc(kind=msg.type)
        if isinstance(msg, AudioFormat):
            self.decoders[msg.stream] = AudioDecoder(msg, self.engine.rate)
            return {"type": "audio.format", "stream": msg.stream, "codec": msg.codec}
        if isinstance(msg, Prompt):
            self.engine.set_prompt(msg.text)
            return None
        if isinstance(msg, Interrupt):
            return {"type": "interrupted", "reason": "client", "dropped_s": self.engine.interrupt()}
        if isinstance(msg, Ping):
            return {"type": "pong", "id": msg.id}
        if isinstance(msg, AgentSay):
            if self.agent is None:
                raise ProtocolError("no_demo_agent", "this session was created without demo_agent")
            if msg.text.strip():
                self.agent.say(msg.text)
            return None
        assert isinstance(msg, End)
        self.ended.set()
        return None

    def handle_binary(self, data: bytes) -> None:
        """Apply one binary audio frame ``[stream u8][payload]``."""
        if len(data) > self.cfg.max_message_bytes:
            raise ProtocolError(
                "too_large", f"messages are limited to {self.cfg.max_message_bytes}"
            )
        stream, payload = split_binary(data)
        self.metrics.messages.inc(kind=f"audio.{stream}")
        self.push_audio(stream, self.decoders[stream].decode(payload))

    def push_audio(self, stream: str, samples: np.ndarray) -> None:
        """Decoded audio of ``stream`` (float32 mono at the model rate) from any transport.

        Raises:
            ProtocolError: the stream runs ahead of real time, or the agent queue is full.
        """
        seconds = len(samples) / self.engine.rate
        if not self.meters[stream].take(seconds):
            raise ProtocolError(
                "audio_rate",
                f"{stream} audio arrives faster than real time beyond the "
                f"{self.cfg.max_audio_burst_s:g}-s allowance; frame dropped",
            )
        self.metrics.audio_seconds.inc(seconds, stream=stream)
        if stream == "user":
            self.engine.push_user(samples)
        elif not self.engine.push_agent(samples):
            raise ProtocolError("agent_queue_full", "agent speech queue is full; frame dropped")

    # ---- generation -------------------------------------------------------------------------
    def pump(self, deliver: Callable[[ServedChunk | None], None]) -> None:
        """Run the engine in this (dedicated) thread, handing each chunk to ``deliver``."""
        try:
            for chunk in self.engine.chunks():
                self._observe(chunk)
                if self.agent is not None:
                    self.agent.on_chunk(chunk.state)
                deliver(chunk)
        except Exception:
            log.exception("session %s: generation failed", self.id)
        finally:
            deliver(None)

    def _observe(self, chunk: ServedChunk) -> None:
        m = self.metrics
        m.chunks.inc(state=chunk.state)
        m.chunk_compute.observe(chunk.latency["compute_s"])
        seq = sum(chunk.timings.values())
        if seq > 0:
            m.rtf.observe(self.engine.chunk_s / seq)
        if "input_to_frame_s" in chunk.latency:
            m.input_latency.observe(chunk.latency["input_to_frame_s"])
        if chunk.latency["slack_s"] < 0 and chunk.index > 0:
            m.chunks_late.inc()


class SessionManager:
    """Creates sessions up to the limit, finds them by id, ends and reaps them."""

    def __init__(self, model: ServedModel, config: ServeConfig, metrics: ServeMetrics) -> None:
        self.model, self.cfg, self.metrics = model, config, metrics
        self.scheduler = FairScheduler(config.compute_slots)
        self.sessions: dict[str, LiveSession] = {}
        self._reserved = 0
        self._lock = asyncio.Lock()

    async def create(self, spec: SessionSpec) -> LiveSession:
        """Build a session (the image encode runs off the event loop).

        Raises:
            Busy: ``max_sessions`` are alive already.
        """
        async with self._lock:
            if len(self.sessions) + self._reserved >= self.cfg.max_sessions:
                self.metrics.sessions_rejected.inc(reason="busy")
                raise Busy(f"server busy: {self.cfg.max_sessions} sessions are running")
            self._reserved += 1
        try:
            engine = await asyncio.to_thread(self._engine, spec)
            session = LiveSession(engine, spec, self.cfg, self.metrics)
        finally:
            self._reserved -= 1
        self.sessions[session.id] = session
        self.metrics.sessions_total.inc()
        self.metrics.sessions.set(len(self.sessions))
        log.info("session created", extra={"session": session.id, "char": spec.character_id})
        return session

    def _engine(self, spec: SessionSpec) -> SessionEngine:
        return SessionEngine(
            self.model.bundle,
            spec.image,
            references=spec.references,
            prompt=spec.persona,
            config=self.cfg,
            scheduler=self.scheduler,
        )

    def get(self, session_id: str) -> LiveSession | None:
        return self.sessions.get(session_id)

    def end(self, session: LiveSession, reason: str) -> None:
        """Stop a session's generation and forget it (idempotent)."""
        session.engine.close()
        session.ended.set()
        if self.sessions.pop(session.id, None) is not None:
            log.info("session ended", extra={"session": session.id, "reason": reason})
        self.metrics.sessions.set(len(self.sessions))

    def reap(self) -> None:
        """End sessions never attached within ``idle_timeout_s``."""
        now = time.monotonic()
        for s in list(self.sessions.values()):
            if not s.attached and now - s.created > self.cfg.idle_timeout_s:
                self.end(s, "idle_timeout")

    def close_all(self) -> None:
        for s in list(self.sessions.values()):
            self.end(s, "shutdown")
