"""Raw-footage mode: messy two-person scenes with the ground truth a cleaning pipeline should find.

A scene is one conversation between two characters, cut into shots: both people in frame, one
of them alone, or nobody. Some shots carry defects that a real-footage pipeline must drop:
burnt-in subtitles, a logo, blur, picture-in-picture, an empty frame, or a length under
`MIN_SHOT_S`. The ground truth says, per shot, where it starts and ends (frames) and whether to
keep it or why not, and, per person and frame, the speak/listen/idle label and the face box.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

from lpm.data.stage.character import Character, make_character, sample_identity
from lpm.data.stage.conversation import Conversation, make_conversation
from lpm.data.stage.performance import Performance, perform
from lpm.data.stage.render import FrameState, draw_character, head_layout, render_background
from lpm.data.stage.schema import SCHEMA_VERSION, STATES

MIN_SHOT_S = 3.0
"""Shots shorter than this (seconds) are dropped by the pipeline (defect `too_short`)."""
DEFECTS = ("keep", "too_short", "empty", "subtitles", "logo", "blur", "pip")
"""Per-shot verdict: `keep` or the reason to drop the shot."""
LAYOUTS = ("two_shot", "single_0", "single_1", "empty")
_DEFECT_WEIGHTS = {"keep": 0.45, "subtitles": 0.12, "logo": 0.12, "blur": 0.12, "pip": 0.12}


@dataclass(frozen=True, kw_only=True)
class Shot:
    """One shot: frames [start_frame, end_frame) of the scene."""

    start_frame: int
    end_frame: int
    layout: str
    """One of `LAYOUTS`."""
    defect: str
    """One of `DEFECTS`."""
    zoom: float
    """Framing scale (1 = the default portrait)."""


@dataclass(kw_only=True)
class RawScene:
    """A rendered raw scene held in memory."""

    frames: np.ndarray
    """(T, H, W, 3) uint8 RGB."""
    tracks: tuple[np.ndarray, np.ndarray]
    """Each person's own speech (float32, `sample_rate` Hz)."""
    mix: np.ndarray
    sample_rate: int
    fps: int
    truth: dict
    """Ground truth (see `docs/stage.md`)."""


def _swap(conv: Conversation) -> Conversation:
    """The same conversation seen from the partner's side (speakers 0 and 1 exchanged)."""
    return replace(conv, utterances=[replace(u, speaker=1 - u.speaker) for u in conv.utterances])


def _plan_shots(rng: np.random.Generator, n_frames: int, fps: int) -> list[Shot]:
    shots: list[Shot] = []
    start = 0
    names = list(_DEFECT_WEIGHTS)
    p = np.asarray([_DEFECT_WEIGHTS[k] for k in names])
    while start < n_frames:
        length = int(rng.uniform(1.2, 7.0) * fps)
        end = min(n_frames, start + length)
        if n_frames - end < fps:  # no sliver at the end
            end = n_frames
        layout = LAYOUTS[int(rng.choice(4, p=[0.35, 0.28, 0.28, 0.09]))]
        if shots and layout == shots[-1].layout:
            # An editor never cuts between two identical framings (such a cut is invisible):
            # the next shot always changes the framing.
            others = [k for k in LAYOUTS if k != layout]
            layout = others[int(rng.integers(len(others)))]
        defect = names[int(rng.choice(len(names), p=p / p.sum()))]
        if layout == "empty":
            defect = "empty"
        elif (end - start) < MIN_SHOT_S * fps:
            defect = "too_short"
        elif defect == "pip" and layout == "two_shot":
            layout = "single_0" if rng.random() < 0.5 else "single_1"
        shots.append(
            Shot(
                start_frame=start,
                end_frame=end,
                layout=layout,
                defect=defect,
                zoom=float(rng.uniform(0.9, 1.1)),
            )
        )
        start = end
    return shots


def _person_state(perf: Performance, i: int, yaw_offset: float) -> FrameState:
    st = perf.frame_state(i)
    st.yaw += yaw_offset
    return st


def _draw_shot_frame(
    canvas: np.ndarray,
    shot: Shot,
    people: list[Character],
    perfs: list[Performance],
    i: int,
    size: int,
) -> list[list[int] | None]:
    """Draw the people of one frame; return each person's face box (or None if not in view)."""
    boxes: list[list[int] | None] = [None, None]
    if shot.layout == "two_shot":
        r = size * 0.14 * shot.zoom
        for k, (x, yaw) in enumerate(((0.3, 22.0), (0.7, -22.0))):
            boxes[k] = list(
                draw_character(
                    canvas, people[k], _person_state(perfs[k], i, yaw), (size * x, size * 0.45), r
                )
            )
    elif shot.layout in ("single_0", "single_1"):
        k = int(shot.layout[-1])
        (cx, cy), r = head_layout(size)
        boxes[k] = list(
            draw_character(
                canvas, people[k], _person_state(perfs[k], i, 0.0), (cx, cy), r * shot.zoom
            )
        )
    return boxes


def _apply_defect(
    img: np.ndarray,
    shot: Shot,
    people: list[Character],
    perfs: list[Performance],
    i: int,
    subtitle: str,
    logo_colour: tuple[int, int, int],
) -> list[int] | None:
    size = img.shape[0]
    font_scale = size / 420.0
    if shot.defect == "subtitles" and subtitle:
        text = subtitle[:28]
        (tw, th), _ = cv2.getTextSize(text, cv2.FONT_HERSHEY_SIMPLEX, font_scale, 1)
        org = (max(1, (size - tw) // 2), size - max(3, size // 16))
        thick = max(1, size // 96)
        cv2.putText(
            img, text, org, cv2.FONT_HERSHEY_SIMPLEX, font_scale, (0, 0, 0), thick + 2, cv2.LINE_AA
        )
        cv2.putText(
            img,
            text,
            org,
            cv2.FONT_HERSHEY_SIMPLEX,
            font_scale,
            (255, 255, 255),
            thick,
            cv2.LINE_AA,
        )
    elif shot.defect == "logo":
        s = max(8, size // 7)
        x0, y0 = size - s - size // 20, size // 20
        cv2.rectangle(img, (x0, y0), (x0 + s, y0 + s), logo_colour, -1, cv2.LINE_AA)
        cv2.circle(
            img, (x0 + s // 2, y0 + s // 2), s // 3, (255, 255, 255), max(1, s // 8), cv2.LINE_AA
        )
    elif shot.defect == "blur":
        sigma = size / 35.0
        img[:] = cv2.GaussianBlur(img, (0, 0), sigma)
    elif shot.defect == "pip":
        other = 1 - int(shot.layout[-1])
        inset = max(16, size // 3)
        inset -= inset % 2
        small = render_background(people[other], inset).copy()
        (cx, cy), r = head_layout(inset)
        draw_character(small, people[other], perfs[other].frame_state(i), (cx, cy), r)
        x0, y0 = size - inset - size // 24, size - inset - size // 24
        img[y0 : y0 + inset, x0 : x0 + inset] = small
        cv2.rectangle(img, (x0, y0), (x0 + inset - 1, y0 + inset - 1), (255, 255, 255), 1)
        return [x0, y0, x0 + inset, y0 + inset]
    return None


def render_raw_scene(
    seed: int,
    seconds: float = 30.0,
    size: int = 128,
    fps: int = 24,
    split: str = "train",
    backend: str = "auto",
    sample_rate: int = 16_000,
) -> RawScene:
    """Render one raw two-person scene with its ground truth (deterministic for a seed)."""
    if seconds < 2.0:
        raise ValueError(f"raw scenes need at least 2 seconds, got {seconds}")
    if size < 32 or size % 2:
        raise ValueError(f"size must be an even number >= 32, got {size}")
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 0xA11]))
    ids = [sample_identity(rng, split), sample_identity(rng, split)]
    while ids[1] == ids[0]:
        ids[1] = sample_identity(rng, split)
    people = [make_character(s) for s in ids]
    conv = make_conversation(
        people[0], people[1], seconds, rng, "conversation", sample_rate, backend
    )
    perfs = [perform(people[0], conv, fps, rng), perform(people[1], _swap(conv), fps, rng)]
    n = min(p.num_frames for p in perfs)
    shots = _plan_shots(rng, n, fps)
    room = render_background(make_character(int(rng.integers(0, 90_000))), size)
    logo_colour = tuple(int(v) for v in rng.integers(0, 255, 3))
    frames = np.empty((n, size, size, 3), np.uint8)
    boxes: list[list] = [[None] * n, [None] * n]
    pip_boxes: list = [None] * n
    shot_of = np.zeros(n, np.int64)
    for k, shot in enumerate(shots):
        shot_of[shot.start_frame : shot.end_frame] = k
    for i in range(n):
        shot = shots[shot_of[i]]
        if shot.layout in ("single_0", "single_1"):
            img = render_background(people[int(shot.layout[-1])], size).copy()
        else:
            img = room.copy()
        fb = _draw_shot_frame(img, shot, people, perfs, i, size)
        t = (i + 0.5) / fps
        subtitle = next(
            (u.text for u in conv.utterances if u.kind == "sentence" and u.start_s <= t < u.end_s),
            "",
        )
        pip_boxes[i] = _apply_defect(img, shot, people, perfs, i, subtitle, logo_colour)
        frames[i] = img
        for p in range(2):
            boxes[p][i] = fb[p]
    truth = {
        "schema": SCHEMA_VERSION,
        "fps": fps,
        "num_frames": n,
        "min_shot_seconds": MIN_SHOT_S,
        "shots": [
            {
                "index": k,
                "start_frame": s.start_frame,
                "end_frame": s.end_frame,
                "layout": s.layout,
                "verdict": s.defect,
                "people_in_frame": [p for p in (0, 1) if s.layout in ("two_shot", f"single_{p}")],
            }
            for k, s in enumerate(shots)
        ],
        "people": [
            {
                "person": p,
                "identity_seed": ids[p],
                "state": [STATES[int(v)] for v in perfs[p].state[:n]],
                "face_box": boxes[p],
            }
            for p in (0, 1)
        ],
        "pip_box": pip_boxes,
        "script": conv.script(),
        "speech_backend": conv.backend,
    }
    tracks = (conv.track(0), conv.track(1))
    return RawScene(
        frames=frames, tracks=tracks, mix=conv.mix(), sample_rate=sample_rate, fps=fps, truth=truth
    )


def raw_item(cfg, index: int, tmp: Path) -> dict:
    """Write raw scene `index` of a dataset config into `tmp`; return its manifest entry."""
    import json

    from lpm.data.stage.writer import write_mp4

    seed = int(np.random.SeedSequence([int(cfg.seed), int(index), 0x5CE]).generate_state(1)[0])
    scene = render_raw_scene(
        seed, cfg.seconds, cfg.resolution, cfg.fps, cfg.split, cfg.backend, cfg.sample_rate
    )
    write_mp4(tmp / "video.mp4", scene.frames, scene.fps, scene.mix, scene.sample_rate)
    for p, track in enumerate(scene.tracks):
        sf.write(tmp / f"person_{p}.wav", track, scene.sample_rate, subtype="PCM_16")
    sf.write(tmp / "mix.wav", scene.mix, scene.sample_rate, subtype="PCM_16")
    (tmp / "truth.json").write_text(json.dumps(scene.truth, separators=(",", ":")))
    verdicts = [s["verdict"] for s in scene.truth["shots"]]
    return {
        "kind": "raw",
        "num_frames": scene.truth["num_frames"],
        "fps": scene.fps,
        "resolution": cfg.resolution,
        "seconds": cfg.seconds,
        "shots": len(verdicts),
        "kept_shots": verdicts.count("keep"),
        "identity_seeds": [p["identity_seed"] for p in scene.truth["people"]],
        "speech_backend": scene.truth["speech_backend"],
    }
