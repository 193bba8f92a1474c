"""Render a whole Stage clip in memory: frames, labels, audio tracks, captions and references.

A clip is a window of `seconds` inside a longer session (`margin_s` before and after), seen from
the performer's point of view: the performer is on screen, the partner is only heard. Global
reference images are rendered at session times outside the clip's window.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np

from lpm.data.stage.captions import (
    DENSE_WINDOW_FRAMES,
    CaptionSpan,
    cue_captions,
    dense_captions,
    sentence_captions,
)
from lpm.data.stage.character import Character, make_character, sample_identity
from lpm.data.stage.conversation import MODE_WEIGHTS, MODES, Conversation, make_conversation
from lpm.data.stage.performance import Performance, perform
from lpm.data.stage.render import FrameState, render_frame
from lpm.data.stage.schema import (
    ACTIONS,
    DEFAULT_FPS,
    DEFAULT_SAMPLE_RATE,
    EXPRESSIONS,
    SCHEMA_VERSION,
    STATES,
    VIEWS,
    split_of,
)


@dataclass(frozen=True, kw_only=True)
class ClipSpec:
    """Everything that determines one clip (the same spec always gives the same clip)."""

    performer_seed: int
    """Identity seed of the on-screen performer."""
    partner_seed: int
    """Identity seed of the partner (heard only)."""
    seed: int
    """Seed of the script, voices' noise and performance."""
    seconds: float = 5.0
    """Clip length (seconds)."""
    fps: int = DEFAULT_FPS
    """Frames per second."""
    size: int = 128
    """Frame height and width (pixels)."""
    sample_rate: int = DEFAULT_SAMPLE_RATE
    """Audio sample rate (Hz)."""
    mode: str = "conversation"
    """Script mode, one of `conversation.MODES`."""
    margin_s: float = 2.0
    """Session time before and after the clip (seconds); global references come from it."""
    backend: str = "auto"
    """Speech backend: `auto`, `espeak` or `formant`."""

    def __post_init__(self) -> None:
        if self.seconds <= 0:
            raise ValueError(f"ClipSpec.seconds must be positive, got {self.seconds}")
        if self.fps <= 0:
            raise ValueError(f"ClipSpec.fps must be positive, got {self.fps}")
        if self.size < 32:
            raise ValueError(f"ClipSpec.size must be at least 32 pixels, got {self.size}")
        if self.margin_s < 0.5:
            raise ValueError(f"ClipSpec.margin_s must be at least 0.5 s, got {self.margin_s}")
        if self.mode not in MODES:
            raise ValueError(f"ClipSpec.mode must be one of {MODES}, got {self.mode!r}")
        split_of(self.performer_seed)
        split_of(self.partner_seed)

    @property
    def num_frames(self) -> int:
        return int(round(self.seconds * self.fps))


def clip_spec_for(
    dataset_seed: int,
    index: int,
    *,
    seconds: float = 5.0,
    size: int = 128,
    fps: int = DEFAULT_FPS,
    split: str = "train",
    backend: str = "auto",
    sample_rate: int = DEFAULT_SAMPLE_RATE,
) -> ClipSpec:
    """The spec of clip `index` of a dataset built with `dataset_seed` (deterministic).

    Performer and partner identities are drawn from `split`'s seed range.
    """
    if index < 0:
        raise ValueError(f"clip index must be non-negative, got {index}")
    rng = np.random.default_rng(np.random.SeedSequence([int(dataset_seed), int(index), 0x5C1]))
    performer = sample_identity(rng, split)
    partner = sample_identity(rng, split)
    while partner == performer:
        partner = sample_identity(rng, split)
    mode = MODES[int(rng.choice(len(MODES), p=np.asarray(MODE_WEIGHTS)))]
    return ClipSpec(
        performer_seed=performer,
        partner_seed=partner,
        seed=int(rng.integers(1 << 31)),
        seconds=seconds,
        fps=fps,
        size=size,
        sample_rate=sample_rate,
        mode=mode,
        backend=backend,
    )


@dataclass(kw_only=True)
class StageClip:
    """One rendered clip held in memory."""

    spec: ClipSpec
    performer: Character
    partner: Character
    frames: np.ndarray
    """(T, H, W, 3) uint8 RGB."""
    labels: dict[str, list]
    """Per-frame labels: field name -> list of T values (see `docs/stage.md`)."""
    speak_audio: np.ndarray
    """(N,) float32: the performer's own speech over the clip."""
    listen_audio: np.ndarray
    """(N,) float32: the partner's speech over the clip."""
    mix_audio: np.ndarray
    """(N,) float32: both speakers."""
    dense_captions: list[CaptionSpan]
    sentence_captions: list[CaptionSpan]
    cue_captions: list[CaptionSpan] = field(default_factory=list)
    """Timed cues: runs of one action and expression (`captions.cue_captions`)."""
    references: dict[str, np.ndarray] = field(default_factory=dict)
    """Name -> HxWx3 uint8 RGB: global_0/1, view_<view>, expr_<expression>."""
    script: list[dict] = field(default_factory=list)
    """Utterances overlapping the clip (times in seconds relative to the clip start)."""
    backend: str = "formant"
    """Speech backend that voiced the clip."""
    performance: Performance | None = None
    """Session-long tracks (including the margins), for analysis."""
    clip_start_frame: int = 0
    """First clip frame inside the session tracks."""

    def meta(self) -> dict:
        """JSON-ready metadata (no arrays)."""
        return {
            "schema": SCHEMA_VERSION,
            "spec": asdict(self.spec),
            "performer_seed": self.spec.performer_seed,
            "partner_seed": self.spec.partner_seed,
            "split": self.performer.split,
            "mode": self.spec.mode,
            "num_frames": int(self.frames.shape[0]),
            "fps": self.spec.fps,
            "resolution": self.spec.size,
            "sample_rate": self.spec.sample_rate,
            "speech_backend": self.backend,
            "seconds": self.spec.seconds,
            "voices": {
                "performer": asdict(self.performer.voice),
                "partner": asdict(self.partner.voice),
            },
            "script": self.script,
            "events": [asdict(e) for e in (self.performance.events if self.performance else [])],
        }


def frame_labels(perf: Performance, ch: Character, start: int, stop: int) -> dict[str, list]:
    """Per-frame label arrays for session frames [start, stop) (JSON-ready lists)."""
    from lpm.data.stage.face import FACE_TABLE  # the same blend the renderer draws

    sl = slice(start, stop)
    n = stop - start
    pitch_bias = (
        FACE_TABLE[perf.expression[sl].astype(int), -1] * perf.intensity[sl]
        + FACE_TABLE[perf.prev_expression[sl].astype(int), -1] * perf.prev_intensity[sl]
    )
    view_yaw = {"front": 0.0, "left": -90.0, "right": 90.0, "back": 180.0}[perf.view]
    r = lambda x, d=4: [round(float(v), d) for v in x]
    return {
        "frame": list(range(n)),
        "state": [STATES[int(s)] for s in perf.state[sl]],
        "mouth_open": r(perf.mouth_open[sl]),
        "mouth_round": r(perf.mouth_round[sl]),
        "head_yaw": r(perf.yaw[sl] + view_yaw, 3),
        "head_pitch": r(perf.pitch[sl] + pitch_bias, 3),
        "head_roll": r(perf.roll[sl], 3),
        "gaze_x": r(perf.gaze_x[sl]),
        "gaze_y": r(perf.gaze_y[sl]),
        "brow_raise": r(perf.brow_raise[sl]),
        "expression": [EXPRESSIONS[int(e)] for e in perf.expression[sl]],
        "expression_intensity": r(perf.intensity[sl]),
        "action": [ACTIONS[int(a)] for a in perf.action[sl]],
        "blink": r(perf.blink[sl]),
        "lean": r(perf.lean[sl]),
        "wave": r(perf.wave[sl]),
        "identity": [ch.identity_seed] * n,
        "view": [perf.view] * n,
    }


def reference_images(
    ch: Character, perf: Performance, start: int, stop: int, size: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Global references (2 frames from outside [start, stop)), 4 body views, 8 expressions."""
    refs: dict[str, np.ndarray] = {}
    outside = [
        i
        for i in (
            int(rng.integers(0, max(1, start))),
            int(rng.integers(min(stop, perf.num_frames - 1), perf.num_frames)),
        )
        if i < start or i >= stop
    ]
    for k, i in enumerate(outside):
        refs[f"global_{k}"] = render_frame(ch, perf.frame_state(i), size)
    for v in VIEWS:
        refs[f"view_{v}"] = render_frame(ch, FrameState(view=v), size)
    for e, name in enumerate(EXPRESSIONS):
        refs[f"expr_{name}"] = render_frame(ch, FrameState(expression=e, intensity=1.0), size)
    return refs


def render_clip(
    spec: ClipSpec, *, references: bool = True, conversation: Conversation | None = None
) -> StageClip:
    """Render one clip entirely in memory (no files).

    Args:
        references: also render the reference images (skip for speed when not needed).
        conversation: use this session script instead of writing one from `spec.seed`.
    """
    performer = make_character(spec.performer_seed)
    partner = make_character(spec.partner_seed)
    rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 0xC11]))
    session_s = spec.seconds + 2 * spec.margin_s
    conv = conversation or make_conversation(
        performer, partner, session_s, rng, spec.mode, spec.sample_rate, spec.backend
    )
    perf = perform(performer, conv, spec.fps, rng)
    start = int(round(spec.margin_s * spec.fps))
    stop = start + spec.num_frames
    frames = np.stack(
        [render_frame(performer, perf.frame_state(i), spec.size) for i in range(start, stop)]
    )
    sr = spec.sample_rate
    a0 = int(round(start * sr / spec.fps))
    a1 = int(round(stop * sr / spec.fps))
    speak, listen = conv.track(0)[a0:a1], conv.track(1)[a0:a1]
    t0, t1 = start / spec.fps, stop / spec.fps
    script = [
        {**u, "start_s": round(u["start_s"] - t0, 4), "end_s": round(u["end_s"] - t0, 4)}
        for u in conv.script()
        if u["end_s"] > t0 and u["start_s"] < t1
    ]
    cap_rng = np.random.default_rng(np.random.SeedSequence([spec.seed, 0xCA9]))
    return StageClip(
        spec=spec,
        performer=performer,
        partner=partner,
        frames=frames,
        labels=frame_labels(perf, performer, start, stop),
        speak_audio=speak,
        listen_audio=listen,
        mix_audio=np.clip(speak + listen, -1, 1),
        dense_captions=dense_captions(performer, perf, start, stop, cap_rng, DENSE_WINDOW_FRAMES),
        sentence_captions=sentence_captions(performer, perf, conv, start, stop, cap_rng),
        cue_captions=cue_captions(performer, perf, start, stop, cap_rng),
        references=reference_images(performer, perf, start, stop, spec.size, rng)
        if references
        else {},
        script=script,
        backend=conv.backend,
        performance=perf,
        clip_start_frame=start,
    )
