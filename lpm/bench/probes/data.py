"""Training and evaluation data of the probes, rendered from the Stage world.

Frames come from two sources: random `FrameState`s that cover the label space (the frame cache)
and windows of real performances (`performance.perform` on a synthesised conversation), which
carry the text-triggered actions. Identities are drawn from one split only, so evaluation never
sees a training character. Degradations imitate generated video: shifts and scales, colour
jitter, downscale-upscale, blur, JPEG and noise. Every function is deterministic given its seeds.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, fields, replace
from multiprocessing import get_context

import cv2
import numpy as np

from lpm.data.stage.character import make_character, sample_identity
from lpm.data.stage.conversation import MODE_WEIGHTS, MODES, make_conversation
from lpm.data.stage.face import blend_face
from lpm.data.stage.performance import perform
from lpm.data.stage.render import FrameState, render_frame
from lpm.data.stage.schema import EXPRESSIONS, VIEWS

RENDER_SIZE = 128
"""Side (pixels) of every rendered training frame."""

FACE_VISIBLE_COS = 0.25
"""A face counts as visible when cos(head yaw) exceeds this (|yaw| < ~75 degrees)."""

_VIEW_YAW = {"front": 0.0, "left": -90.0, "right": 90.0, "back": 180.0}

TARGET_FIELDS: tuple[str, ...] = (
    "mouth_open",
    "yaw",
    "pitch",
    "roll",
    "blink",
    "expression",
    "expression_intensity",
    "face_visible",
    "brow_raise",
    "lean",
    "wave",
    "gaze_x",
    "gaze_y",
    "mouth_round",
)
"""Per-frame targets computed by `frame_targets` (angles in degrees)."""

FACE_PARAMS: tuple[str, ...] = (
    "smile",
    "mouth_w",
    "brow_up",
    "brow_inner",
    "brow_asym",
    "eye_open",
    "lower_lid",
    "lid_slant",
    "mouth_open",
    "mouth_round",
    "sneer",
)
"""Blended expression parameters of the renderer (`face.blend_face`: smile, brow_up, ...).

Dense auxiliary targets of the face branch: graded geometry is far easier to learn than the
8-way expression label alone, and the classifier reads the same features. `frame_targets`
stores them as `face_params`, shape (N, len(FACE_PARAMS)).
"""


# --- frame states and their visible labels ------------------------------------------------------


def sample_frame_state(rng: np.random.Generator) -> FrameState:
    """A random `FrameState` covering the label space, weighted toward front-facing portraits."""
    view = VIEWS[int(rng.choice(4, p=[0.8, 0.07, 0.07, 0.06]))]
    if view == "front":
        yaw = rng.normal(0, 8) if rng.random() < 0.6 else rng.uniform(-55, 55)
    else:
        yaw = rng.normal(0, 10)
    pitch = rng.normal(0, 6) if rng.random() < 0.7 else rng.uniform(-22, 22)
    expression = int(rng.integers(len(EXPRESSIONS)))
    intensity = float(rng.uniform(0.4, 1.0))
    prev, prev_i = 0, 0.0
    if rng.random() < 0.2:  # cross-fade between two expressions, the label is the stronger one
        prev = int(rng.integers(len(EXPRESSIONS)))
        prev_i = float(rng.uniform(0.0, min(0.3, 0.6 * intensity)))
    u = rng.random()
    blink = 0.0 if u < 0.55 else 1.0 if u < 0.7 else float(rng.uniform(0, 1))
    return FrameState(
        mouth_open=0.0 if rng.random() < 0.3 else float(rng.uniform(0, 1)),
        mouth_round=0.0 if rng.random() < 0.5 else float(rng.uniform(0, 1)),
        yaw=float(yaw),
        pitch=float(pitch),
        roll=float(np.clip(rng.normal(0, 4), -12, 12)),
        gaze_x=float(np.clip(rng.normal(0, 0.35), -1, 1)),
        gaze_y=float(np.clip(rng.normal(0, 0.25), -1, 1)),
        brow_raise=float(
            np.clip(rng.normal(0, 0.15) if rng.random() < 0.7 else rng.uniform(0, 0.95), -1, 1)
        ),
        expression=expression,
        intensity=intensity,
        prev_expression=prev,
        prev_intensity=prev_i,
        blink=blink,
        view=view,
        sway_x=float(rng.normal(0, 0.05)),
        sway_y=float(rng.uniform(-0.03, 0.03)),
        lean=0.0 if rng.random() < 0.8 else float(rng.uniform(0, 1)),
        wave=0.0 if rng.random() < 0.85 else float(rng.uniform(0, 1)),
        wave_phase=float(rng.uniform(0, 2 * math.pi)),
    )


def sample_easy_frame_state(rng: np.random.Generator) -> FrameState:
    """A near-frontal state whose expression is unobstructed: for the training curriculum.

    Mouth closed (no speech), eyes open, |yaw| small, one expression at intensity 0.6..1 and no
    cross-fade; the rest as in `sample_frame_state`.
    """
    s = sample_frame_state(rng)
    return replace(
        s,
        view="front",
        yaw=float(rng.normal(0, 6)),
        pitch=float(rng.normal(0, 5)),
        mouth_open=0.0,
        blink=0.0,
        intensity=float(rng.uniform(0.6, 1.0)),
        prev_intensity=0.0,
        lean=0.0,
        wave=0.0,
    )


def visible_mouth_open(state: FrameState) -> float:
    """The mouth opening the renderer draws (0..1): speech opening plus the expression's."""
    face = blend_face(state)["mouth_open"]
    return float(np.clip(state.mouth_open + face * (1.0 - state.mouth_open), 0.0, 1.0))


def head_pose(state: FrameState) -> tuple[float, float, float]:
    """Visible head (yaw, pitch, roll) in degrees, as in the Stage labels; yaw in (-180, 180]."""
    yaw = (_VIEW_YAW[state.view] + state.yaw + 180.0) % 360.0 - 180.0
    if yaw == -180.0:
        yaw = 180.0
    pitch = state.pitch + blend_face(state)["pitch"]
    return float(yaw), float(pitch), float(state.roll)


def frame_targets(states: list[FrameState]) -> dict[str, np.ndarray]:
    """Per-frame targets of `TARGET_FIELDS`, each (N,), and `face_params`, (N, P)."""
    out: dict[str, list] = {k: [] for k in TARGET_FIELDS}
    for s in states:
        yaw, pitch, roll = head_pose(s)
        vals = {
            "mouth_open": visible_mouth_open(s),
            "yaw": yaw,
            "pitch": pitch,
            "roll": roll,
            "blink": float(np.clip(s.blink, 0, 1)),
            "expression": s.expression,
            "expression_intensity": s.intensity if s.expression else 1.0,
            "face_visible": math.cos(math.radians(yaw)) > FACE_VISIBLE_COS,
            "brow_raise": s.brow_raise,
            "lean": s.lean,
            "wave": s.wave,
            "gaze_x": s.gaze_x,
            "gaze_y": s.gaze_y,
            "mouth_round": s.mouth_round,
        }
        for k, v in vals.items():
            out[k].append(v)
    dtypes = {"expression": np.int64, "face_visible": bool}
    result = {k: np.asarray(v, dtypes.get(k, np.float32)) for k, v in out.items()}
    faces = [blend_face(s) for s in states]
    params = [[f[k] for k in FACE_PARAMS] for f in faces]
    result["face_params"] = np.asarray(params, np.float32).reshape(len(states), len(FACE_PARAMS))
    return result


# --- degradations -------------------------------------------------------------------------------


@dataclass(frozen=True, kw_only=True)
class Degradation:
    """One draw of the degradations applied to a frame (or to every frame of a video)."""

    scale: float = 1.0
    shift_x: float = 0.0
    """Horizontal shift (fraction of the width)."""
    shift_y: float = 0.0
    angle: float = 0.0
    """Rotation (degrees)."""
    brightness: float = 0.0
    """Added to [0, 1] intensities."""
    contrast: float = 1.0
    saturation: float = 1.0
    down: float = 1.0
    """Downscale factor before upscaling back (1 = none)."""
    blur_sigma: float = 0.0
    """Gaussian blur sigma (pixels at 128 px; 0 = none)."""
    jpeg_quality: int = 0
    """JPEG quality 1..100 (0 = none)."""
    noise_std: float = 0.0
    """Gaussian noise std (0..255 units)."""


def sample_degradation(rng: np.random.Generator) -> Degradation:
    """A random mix of degradations; each kind is present with some probability."""
    pick = lambda p: rng.random() < p
    return Degradation(
        scale=float(rng.uniform(0.93, 1.07)) if pick(0.6) else 1.0,
        shift_x=float(rng.uniform(-0.04, 0.04)) if pick(0.6) else 0.0,
        shift_y=float(rng.uniform(-0.04, 0.04)) if pick(0.6) else 0.0,
        angle=float(rng.uniform(-3, 3)) if pick(0.3) else 0.0,
        brightness=float(rng.uniform(-0.1, 0.1)) if pick(0.5) else 0.0,
        contrast=float(rng.uniform(0.85, 1.15)) if pick(0.5) else 1.0,
        saturation=float(rng.uniform(0.85, 1.15)) if pick(0.4) else 1.0,
        down=float(rng.uniform(0.3, 0.9)) if pick(0.5) else 1.0,
        blur_sigma=float(rng.uniform(0.3, 1.8)) if pick(0.4) else 0.0,
        jpeg_quality=int(rng.integers(15, 90)) if pick(0.5) else 0,
        noise_std=float(rng.uniform(1, 8)) if pick(0.4) else 0.0,
    )


def apply_degradation(img: np.ndarray, d: Degradation, rng: np.random.Generator) -> np.ndarray:
    """Degrade one HxWx3 uint8 RGB frame; `rng` draws the noise. Returns a new uint8 frame."""
    h, w = img.shape[:2]
    out = img
    if d.scale != 1.0 or d.shift_x or d.shift_y or d.angle:
        m = cv2.getRotationMatrix2D((w / 2, h / 2), d.angle, d.scale)
        m[:, 2] += (d.shift_x * w, d.shift_y * h)
        out = cv2.warpAffine(
            out, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE
        )
    x = out.astype(np.float32) / 255.0
    if d.saturation != 1.0:
        grey = x.mean(-1, keepdims=True)
        x = grey + (x - grey) * d.saturation
    if d.contrast != 1.0 or d.brightness:
        x = (x - 0.5) * d.contrast + 0.5 + d.brightness
    out = (np.clip(x, 0, 1) * 255 + 0.5).astype(np.uint8)
    if d.down < 1.0:
        small = (max(8, int(w * d.down)), max(8, int(h * d.down)))
        out = cv2.resize(
            cv2.resize(out, small, interpolation=cv2.INTER_AREA),
            (w, h),
            interpolation=cv2.INTER_LINEAR,
        )
    if d.blur_sigma > 0:
        out = cv2.GaussianBlur(out, (0, 0), d.blur_sigma * w / RENDER_SIZE)
    if d.noise_std > 0:
        noise = rng.normal(0, d.noise_std, out.shape)
        out = np.clip(out + noise, 0, 255).astype(np.uint8)
    if d.jpeg_quality > 0:
        ok, buf = cv2.imencode(".jpg", out[..., ::-1], [cv2.IMWRITE_JPEG_QUALITY, d.jpeg_quality])
        if ok:
            out = cv2.imdecode(buf, cv2.IMREAD_COLOR)[..., ::-1]
    return np.ascontiguousarray(out)


def degrade_batch(frames: np.ndarray, rng: np.random.Generator, prob: float) -> np.ndarray:
    """Independently degrade each frame of (N, H, W, 3) uint8 with probability `prob`."""
    out = frames.copy()
    for i in range(len(frames)):
        if rng.random() < prob:
            out[i] = apply_degradation(frames[i], sample_degradation(rng), rng)
    return out


# --- rendering (optionally in worker processes) -------------------------------------------------


def _worker_init() -> None:
    cv2.setNumThreads(1)


def _map(fn, items: list, workers: int) -> Iterator:
    """Ordered map over `items`, in `workers` processes when > 1."""
    if workers <= 1 or len(items) < 2:
        yield from map(fn, items)
        return
    # forkserver, not fork: forking after torch has started its thread pool (action windows
    # are rendered after training) deadlocks the workers
    ctx = get_context("forkserver")
    ctx.set_forkserver_preload(["lpm.bench.probes.data"])
    with ctx.Pool(workers, initializer=_worker_init) as pool:
        yield from pool.imap(fn, items, chunksize=max(1, min(16, len(items) // (4 * workers))))


@dataclass
class FrameSet:
    """Rendered frames of random states with their targets."""

    frames: np.ndarray
    """(N, S, S, 3) uint8 RGB, S = `RENDER_SIZE`."""
    targets: dict[str, np.ndarray]
    """`TARGET_FIELDS` -> (N,) arrays."""
    identity: np.ndarray
    """(N,) int64 identity index (0 .. number of identities - 1)."""
    identity_seeds: np.ndarray
    """(number of identities,) Stage identity seeds."""
    easy: np.ndarray | None = None
    """(N,) bool: frame drawn by `sample_easy_frame_state` (curriculum); None when none are."""


def _render_identity(
    args: tuple[int, int, int, int, int],
) -> tuple[np.ndarray, list[FrameState]]:
    identity_seed, seed, index, n, n_easy = args
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, 0xF4A3]))
    ch = make_character(identity_seed)
    states = [sample_frame_state(rng) for _ in range(n)]
    states += [sample_easy_frame_state(rng) for _ in range(n_easy)]
    return np.stack([render_frame(ch, s, RENDER_SIZE) for s in states]), states


def distinct_identities(split: str, n: int, seed: int) -> np.ndarray:
    """`n` distinct identity seeds of a split, drawn with `seed`."""
    rng = np.random.default_rng(np.random.SeedSequence([seed, 0x1D5]))
    seen: dict[int, None] = {}
    while len(seen) < n:
        seen.setdefault(sample_identity(rng, split))
    return np.asarray(list(seen), np.int64)


def render_frame_set(
    split: str,
    n_ids: int,
    frames_per_id: int,
    seed: int,
    workers: int = 1,
    progress=None,
    easy_per_id: int = 0,
) -> FrameSet:
    """Render `frames_per_id` random states of `n_ids` identities of `split` (deterministic).

    Args:
        progress: optional callable invoked with the number of identities just rendered.
        easy_per_id: extra `sample_easy_frame_state` frames per identity, after its random ones.
    """
    seeds = distinct_identities(split, n_ids, seed)
    jobs = [(int(s), seed, i, frames_per_id, easy_per_id) for i, s in enumerate(seeds)]
    frames, states = [], []
    for imgs, st in _map(_render_identity, jobs, workers):
        frames.append(imgs)
        states += st
        if progress is not None:
            progress(1)
    return FrameSet(
        frames=np.concatenate(frames),
        targets=frame_targets(states),
        identity=np.repeat(np.arange(n_ids), frames_per_id + easy_per_id),
        identity_seeds=seeds,
        easy=np.tile(np.arange(frames_per_id + easy_per_id) >= frames_per_id, n_ids)
        if easy_per_id
        else None,
    )


# --- performance windows (actions) --------------------------------------------------------------


@dataclass
class SessionWindows:
    """Frames of one rendered performance and action windows into them."""

    frames: np.ndarray
    """(N, S, S, 3) uint8: the session frames that some window needs."""
    targets: dict[str, np.ndarray]
    """Per-frame targets of those frames (`frame_targets`)."""
    windows: np.ndarray
    """(K, T) int64 indices into `frames` (edges repeat the first/last session frame)."""
    actions: np.ndarray
    """(K,) int64 action index of each window's centre frame (`schema.ACTIONS`)."""
    identity_seed: int


def _render_session(args: tuple[str, int, int, float, int, int]) -> SessionWindows:
    split, seed, index, seconds, window, per_event = args
    rng = np.random.default_rng(np.random.SeedSequence([seed, index, 0xAC7]))
    performer = sample_identity(rng, split)
    partner = sample_identity(rng, split)
    while partner == performer:
        partner = sample_identity(rng, split)
    ch, other = make_character(performer), make_character(partner)
    mode = MODES[int(rng.choice(len(MODES), p=np.asarray(MODE_WEIGHTS)))]
    conv = make_conversation(ch, other, seconds, rng, mode, 16_000, "formant")
    perf = perform(ch, conv, 24, rng)
    n = perf.num_frames
    centres: list[int] = []
    for e in perf.events:
        lo, hi = int(e.start_s * 24), min(n, int(math.ceil(e.end_s * 24)))
        if hi > lo:
            centres += [int(c) for c in rng.integers(lo, hi, size=per_event)]
    idle = np.flatnonzero(perf.action == 0)
    if len(idle):
        n_idle = min(per_event, len(idle))
        centres += [int(c) for c in rng.choice(idle, size=n_idle, replace=False)]
    offsets = np.arange(window) - window // 2
    win = np.clip(np.asarray(centres, np.int64)[:, None] + offsets[None], 0, n - 1)
    needed, inverse = np.unique(win, return_inverse=True)
    states = [perf.frame_state(int(i)) for i in needed]
    frames = np.stack([render_frame(ch, s, RENDER_SIZE) for s in states])
    return SessionWindows(
        frames=frames,
        targets=frame_targets(states),
        windows=inverse.reshape(win.shape).astype(np.int64),
        actions=perf.action[np.asarray(centres)].astype(np.int64),
        identity_seed=performer,
    )


def iter_sessions(
    split: str,
    n_sessions: int,
    seed: int,
    seconds: float,
    window: int,
    workers: int = 1,
    per_event: int = 2,
) -> Iterator[SessionWindows]:
    """Render `n_sessions` performances of `split` identities with their action windows.

    Args:
        window: frames per window (24 fps).
        per_event: window centres drawn inside every action event, and on action-free frames.
    """
    jobs = [(split, seed, i, seconds, window, per_event) for i in range(n_sessions)]
    yield from _map(_render_session, jobs, workers)


def degradation_fields() -> tuple[str, ...]:
    """Names of the `Degradation` fields (for cards and docs)."""
    return tuple(f.name for f in fields(Degradation))
