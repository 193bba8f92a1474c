"""`SessionEngine`: one live character — audio timeline, state machine, pacing (DESIGN §3).

Video never stops: chunk after chunk leaves the `StreamingSession` pipeline (backbone on n,
refiner on n-1, decode on n-2). At each chunk boundary — when the backbone is about to start
chunk n — the engine decides what that chunk shows:

    responding  agent speech is queued: the next 1 s of it becomes chunk n's ``speak`` audio
    listening   the user is speaking (webrtcvad): chunk n's ``listen`` audio is the newest mic audio
    idle        neither
    barge-in    the user speaks while the character is responding: queued agent speech is dropped
                and chunk n is already listening (one chunk boundary, never mid-chunk)

Pacing bounds look-ahead and thus latency: chunk n may start only ``lead`` seconds before its
playback deadline, ``lead`` being the measured compute time of a chunk plus a margin, and only
when the process-wide `FairScheduler` gives it a slot. Chunk 0 starts at once (warm-up); its
arrival starts the playback clock. A chunk that misses its deadline shifts the clock (the
viewer sees the last frame held) and counts as late.
"""

from __future__ import annotations

import collections
import logging
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field

import numpy as np

from lpm.inference import ModelBundle, ReferenceImage
from lpm.inference.streaming import StreamingSession
from lpm.serve.audio import VoiceActivity
from lpm.serve.config import ServeConfig
from lpm.serve.scheduler import FairScheduler, SessionClosed

log = logging.getLogger(__name__)

MIN_SPEECH_FRAMES = 3
"""30-ms VAD frames of speech within one chunk that count as the user speaking."""


@dataclass
class ChunkPlan:
    """What the engine decided at a chunk boundary."""

    index: int
    state: str
    speak: np.ndarray | None
    """Agent audio played with this chunk (float32 at the model rate), None when silent."""
    started_at: float
    """Clock seconds when the backbone was allowed to start."""
    newest_input_at: float | None
    """Clock seconds when the newest audio this chunk reacts to arrived."""
    queue_s: float
    """Seconds this chunk waited for a scheduler slot."""
    gate_s: float
    """Seconds the backbone was held at the boundary (pacing + slot), excluded from timings."""
    barge_in: bool = False


@dataclass
class ServedChunk:
    """One chunk ready to send: frames, agent audio, state and latency figures.

    Transports encode the frames in their own codec (JPEG over the WebSocket, H.264/VP8 over
    WebRTC)."""

    index: int
    pts: float
    """Stream time of the first frame (seconds)."""
    deadline: float
    """Clock seconds when the first frame is due on the wire."""
    state: str
    frames: np.ndarray
    """(F, H, W, 3) uint8 RGB frames, F = fps × chunk seconds."""
    speak: np.ndarray | None
    timings: dict[str, float]
    latency: dict[str, float] = field(default_factory=dict)


class _PacedStream(StreamingSession):
    """A `StreamingSession` whose chunk boundaries call back into the engine."""

    def __init__(self, *args, before_chunk: Callable[[int], None], **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._before_chunk = before_chunk

    def conditions(self, index: int):
        self._before_chunk(index)
        return super().conditions(index)


class SessionEngine:
    """Drives one `StreamingSession` for a live client; inputs are thread-safe."""

    def __init__(
        self,
        bundle: ModelBundle,
        image: np.ndarray,
        *,
        references: Sequence[ReferenceImage] = (),
        prompt: str = "",
        config: ServeConfig,
        scheduler: FairScheduler,
        notify: Callable[[dict], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.cfg, self.scheduler, self.clock = config, scheduler, clock
        self.notify = notify or (lambda _event: None)
        self.stream = _PacedStream(
            bundle,
            image,
            references=references,
            prompt=prompt,
            seed=config.seed,
            before_chunk=self._boundary,
        )
        self.rate = self.stream.sample_rate
        self.chunk = self.stream.chunk_samples
        self.chunk_s = self.chunk / self.rate
        self.fps = bundle.cfg.fps
        self._lock = threading.Lock()
        self._user: collections.deque[tuple[float, np.ndarray]] = collections.deque()
        self._agent: collections.deque[np.ndarray] = collections.deque()
        self._agent_arrival: float | None = None
        self._speech_frames = 0
        self._speaking_until = 0.0
        self._vad = VoiceActivity(self.rate, config.vad_aggressiveness)
        self._plans: dict[int, ChunkPlan] = {}
        self._user_audio = np.zeros(self.chunk, np.float32)
        self._held = 0
        self._state = "warmup"
        self.closed = threading.Event()
        self._started = threading.Event()
        self.play_start = 0.0
        self._shift = 0.0
        self._compute: collections.deque[float] = collections.deque(maxlen=8)
        self.late_chunks = 0

    # ---- inputs (event-loop thread) ---------------------------------------------------------
    def push_user(self, samples: np.ndarray) -> None:
        """Microphone audio (float32 at the model rate) -> the ``listen`` stream."""
        now = self.clock()
        found = self._vad.speech_frames(samples)
        with self._lock:
            self._user.append((now, samples))
            if found:
                self._speech_frames += found
                self._speaking_until = now + self.cfg.vad_hangover_s

    def push_agent(self, samples: np.ndarray) -> bool:
        """Agent speech (float32 at the model rate) -> the ``speak`` stream; False when full."""
        with self._lock:
            queued = sum(len(a) for a in self._agent)
            if queued + len(samples) > self.cfg.max_agent_queue_s * self.rate:
                return False
            self._agent.append(samples)
            self._agent_arrival = self.clock()
        return True

    def interrupt(self) -> float:
        """Drop queued agent speech; returns the seconds dropped."""
        with self._lock:
            dropped = sum(len(a) for a in self._agent) / self.rate
            self._agent.clear()
        return dropped

    def set_prompt(self, text: str) -> None:
        self.stream.set_prompt(text)

    @property
    def agent_queued_s(self) -> float:
        with self._lock:
            return sum(len(a) for a in self._agent) / self.rate

    # ---- chunk boundary (backbone thread) ----------------------------------------------------
    def deadline(self, index: int) -> float:
        """Clock seconds when chunk ``index``'s first frame is due."""
        return self.play_start + self._shift + index * self.chunk_s

    @property
    def lead_s(self) -> float:
        """How long before its deadline a chunk starts: recent worst compute time + margin."""
        return (max(self._compute) if self._compute else self.chunk_s) + self.cfg.lead_margin_s

    def _boundary(self, index: int) -> None:
        entered = self.clock()
        if index == 0:
            queue_s = self.scheduler.acquire(self.clock(), self.clock(), self.closed)
        else:
            while not self._started.wait(0.05):
                if self.closed.is_set():
                    raise SessionClosed
            deadline = self.deadline(index)
            queue_s = self.scheduler.acquire(deadline - self.lead_s, deadline, self.closed)
        with self._lock:
            self._held += 1
            plan = self._plan(index, queue_s, self.clock() - entered)
            self._plans[index] = plan
        if plan.barge_in:
            self.notify({"type": "interrupted", "chunk": index, "reason": "barge_in"})
        self.stream.push_audio("listen", self._user_audio)
        self.stream.push_audio("speak", plan.speak if plan.speak is not None else self._silence)

    def _plan(self, index: int, queue_s: float, gate_s: float) -> ChunkPlan:
        """Take this chunk's audio and decide its state (holding ``_lock``)."""
        now = self.clock()
        user_active = self._speech_frames >= MIN_SPEECH_FRAMES or now < self._speaking_until
        self._speech_frames = 0
        newest = self._take_user()
        barge_in = (
            user_active and self.cfg.barge_in and self._state == "responding" and bool(self._agent)
        )
        if barge_in:
            self._agent.clear()
        speak, agent_at = self._take_agent()
        if speak is not None:
            state = "responding"
            newest = agent_at if self._state != "responding" else newest
        else:
            state = "listening" if user_active else "idle"
        self._state = state
        return ChunkPlan(index, state, speak, now, newest, queue_s, gate_s, barge_in)

    def _take_user(self) -> float | None:
        """Newest ≤ 1 s of mic audio into ``_user_audio`` (right-aligned); its arrival time."""
        backlog = self.chunk + round(self.cfg.user_backlog_s * self.rate)
        total = sum(len(s) for _, s in self._user)
        while self._user and total - len(self._user[0][1]) >= backlog:
            total -= len(self._user.popleft()[1])
        out, filled, newest = np.zeros(self.chunk, np.float32), 0, None
        while self._user and filled < self.chunk:
            at, samples = self._user.popleft()
            take = samples[: self.chunk - filled]
            out[filled : filled + len(take)] = take
            filled += len(take)
            newest = at
            if len(take) < len(samples):
                self._user.appendleft((at, samples[len(take) :]))
        self._user_audio = np.roll(out, self.chunk - filled)
        return newest

    def _take_agent(self) -> tuple[np.ndarray | None, float | None]:
        """The next 1 s of queued agent speech (zero-padded), or None when nothing is queued."""
        if not self._agent:
            return None, None
        out, filled = np.zeros(self.chunk, np.float32), 0
        while self._agent and filled < self.chunk:
            samples = self._agent.popleft()
            take = samples[: self.chunk - filled]
            out[filled : filled + len(take)] = take
            filled += len(take)
            if len(take) < len(samples):
                self._agent.appendleft(samples[len(take) :])
        return out, self._agent_arrival

    @property
    def _silence(self) -> np.ndarray:
        return np.zeros(self.chunk, np.float32)

    # ---- running (driver thread) -------------------------------------------------------------
    def chunks(self) -> Iterator[ServedChunk]:
        """Served chunks, for ever, until `close`; run this in a thread of its own."""
        try:
            for chunk in self.stream.chunks(None, pipelined=True, lookahead=self.cfg.lookahead):
                with self._lock:
                    plan = self._plans.pop(chunk.index)
                    owned = self._held > 0  # close() may have returned the slot already
                    self._held -= owned
                if owned:
                    self.scheduler.release()
                yield self._served(chunk, plan)
                if self.closed.is_set():
                    return
        except SessionClosed:
            return
        finally:
            self.close()

    def _served(self, chunk, plan: ChunkPlan) -> ServedChunk:
        now = self.clock()
        if chunk.index == 0:
            self.play_start = now
            self._started.set()
        deadline = self.deadline(chunk.index)
        compute = now - plan.started_at
        self._compute.append(compute)
        timings = dict(chunk.timings)
        timings["conditions"] = max(0.0, timings.get("conditions", 0.0) - plan.gate_s)
        latency = {"compute_s": compute, "slack_s": deadline - now, "queue_s": plan.queue_s}
        if now > deadline:
            self._shift += now - deadline
            deadline = now
            self.late_chunks += chunk.index > 0
        if plan.newest_input_at is not None:
            latency["input_to_frame_s"] = deadline - plan.newest_input_at
        return ServedChunk(
            index=chunk.index,
            pts=chunk.index * self.chunk_s,
            deadline=deadline,
            state=plan.state,
            frames=chunk.frames,
            speak=plan.speak,
            timings=timings,
            latency=latency,
        )

    def close(self) -> None:
        """Stop generating; safe to call from any thread, more than once."""
        self.closed.set()
        with self._lock:
            held, self._held = self._held, 0
        if held:
            self.scheduler.release(held)
        self.scheduler.wake()
