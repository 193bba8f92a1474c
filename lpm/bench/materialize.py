"""Materialise a case: turn its spec into input arrays (and ground truth) on disk.

Stage cases are rendered with the Stage world; the ground truth is the rendered clip itself, and
the scorable instructions come from the clip's own timeline (text-triggered action events and
expression runs), so a perfect system performs exactly what the instructions ask. Real cases
read their files. Either way the result is written once into `DIR/inputs/` and read back on the
next run (resumable).

`DIR/inputs/` layout: `case.json` (the resolved case, instructions included), `first_frame.png`,
`refs/<kind>_<subtype>.png`, `speak.wav`, `listen.wav` (16-bit PCM), and for cases with ground
truth `truth.mp4` (+ `labels.json` for Stage cases).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
import soundfile as sf

from lpm.bench.case import CaseSpec, Instruction, ReferenceSpec
from lpm.data.stage.captions import ACTION_PHRASES, EXPRESSION_PHRASES, cue_sentence
from lpm.data.stage.schema import DEFAULT_SAMPLE_RATE
from lpm.media import read_image, read_video, write_mp4

SAMPLE_RATE = DEFAULT_SAMPLE_RATE
"""Sample rate (Hz) of every materialised audio track."""
MIN_EXPRESSION_RUN_S = 1.0
"""Expression runs shorter than this (seconds) do not become scorable instructions."""


@dataclass(kw_only=True)
class CaseInputs:
    """Everything a system needs to generate a case, plus the ground truth when known."""

    case: CaseSpec
    """The resolved case (instructions filled in for Stage cases)."""
    first_frame: np.ndarray
    """(H, W, 3) uint8 RGB."""
    references: list[tuple[ReferenceSpec, np.ndarray]]
    speak: np.ndarray
    """(N,) float32 at `SAMPLE_RATE` Hz, N = duration * SAMPLE_RATE (silence if absent)."""
    listen: np.ndarray
    truth_frames: np.ndarray | None = None
    """(T, H, W, 3) uint8 ground-truth frames at `case.fps`, or None."""
    truth_labels: dict[str, list] | None = None
    """Stage per-frame labels of the ground truth (see `docs/stage.md`), or None."""
    sample_rate: int = SAMPLE_RATE


def _write_png(path: Path, rgb: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def _fit_audio(wave: np.ndarray, n: int) -> np.ndarray:
    out = np.zeros(n, np.float32)
    out[: min(n, len(wave))] = wave[:n]
    return out


def stage_instructions(clip, fps: int) -> tuple[Instruction, ...]:
    """Timed instructions of a rendered Stage clip: dense captions (text only), then one
    scorable instruction per text-triggered action and per expression run in the clip."""
    out: list[Instruction] = []
    dur = clip.frames.shape[0] / fps
    for cap in clip.dense_captions:
        out.append(
            Instruction(start_s=cap.start_frame / fps, end_s=cap.end_frame / fps, text=cap.text)
        )
    t0 = clip.clip_start_frame / fps
    for e in clip.performance.events if clip.performance else []:
        s, t = max(0.0, e.start_s - t0), min(dur, e.end_s - t0)
        if e.source != "prompt" or t - s < 0.5 * e.duration_s:
            continue
        out.append(
            Instruction(
                start_s=round(s, 3),
                end_s=round(t, 3),
                action=e.action,
                text=cue_sentence(action=ACTION_PHRASES[e.action][0]),
            )
        )
    expr = clip.labels["expression"]
    start = 0
    for i in range(1, len(expr) + 1):
        if i == len(expr) or expr[i] != expr[start]:
            if expr[start] != "neutral" and (i - start) / fps >= MIN_EXPRESSION_RUN_S:
                out.append(
                    Instruction(
                        start_s=round(start / fps, 3),
                        end_s=round(i / fps, 3),
                        expression=expr[start],
                        text=cue_sentence(expression=EXPRESSION_PHRASES[expr[start]][0]),
                    )
                )
            start = i
    return tuple(out)


def _render_stage(case: CaseSpec) -> CaseInputs:
    from lpm.data.stage.clip import ClipSpec, render_clip

    st = case.stage
    assert st is not None
    clip = render_clip(
        ClipSpec(
            performer_seed=st.performer_seed,
            partner_seed=st.partner_seed,
            seed=st.seed,
            seconds=case.duration_s,
            fps=case.fps,
            size=st.size,
            mode=st.mode,
            backend=st.backend,
            sample_rate=SAMPLE_RATE,
        )
    )
    names = {"global": "global_{}", "body": "view_{}", "expression": "expr_{}"}
    refs = []
    for r in case.references:
        key = names[r.kind].format(r.subtype)
        if key not in clip.references:
            raise ValueError(f"case {case.id!r}: the Stage world has no reference {key!r}")
        refs.append((r, clip.references[key]))
    n = int(round(case.duration_s * SAMPLE_RATE))
    return CaseInputs(
        case=replace(case, instructions=case.instructions or stage_instructions(clip, case.fps)),
        first_frame=clip.frames[0],
        references=refs,
        speak=_fit_audio(clip.speak_audio, n),
        listen=_fit_audio(clip.listen_audio, n),
        truth_frames=clip.frames,
        truth_labels=clip.labels,
    )


def _read_real(case: CaseSpec, root: Path) -> CaseInputs:
    from lpm.models.audio import load_audio

    n = int(round(case.duration_s * SAMPLE_RATE))
    audio = {}
    for name in ("speak_audio", "listen_audio"):
        rel = getattr(case, name)
        audio[name] = (
            _fit_audio(load_audio(root / rel, SAMPLE_RATE, allow_silent=True), n)
            if rel
            else np.zeros(n, np.float32)
        )
    refs = []
    for r in case.references:
        if not r.path:
            raise ValueError(f"case {case.id!r}: reference {r.name} needs a `path`")
        refs.append((r, read_image(root / r.path)))
    truth = read_video(root / case.ground_truth)[0] if case.ground_truth else None
    return CaseInputs(
        case=case,
        first_frame=read_image(root / case.first_frame),
        references=refs,
        speak=audio["speak_audio"],
        listen=audio["listen_audio"],
        truth_frames=truth,
    )


def materialize(case: CaseSpec, root: Path, case_dir: Path) -> CaseInputs:
    """Render or read the case's inputs, write them under `case_dir/inputs/`, return them.

    Args:
        root: directory the case's relative paths resolve against (the suite file's).
        case_dir: the case's output directory; an existing complete `inputs/` is reused.
    """
    inputs_dir = Path(case_dir) / "inputs"
    if (inputs_dir / "case.json").is_file():
        return load_inputs(inputs_dir)
    inputs = _render_stage(case) if case.stage is not None else _read_real(case, Path(root))
    tmp = inputs_dir.with_name(".inputs.tmp")
    if tmp.exists():
        import shutil

        shutil.rmtree(tmp)
    _write_inputs(inputs, tmp)
    os.replace(tmp, inputs_dir)
    # read back, so the ground truth is always the decoded mp4 that systems are compared with
    return load_inputs(inputs_dir)


def _write_inputs(inputs: CaseInputs, d: Path) -> None:
    d.mkdir(parents=True, exist_ok=True)
    _write_png(d / "first_frame.png", inputs.first_frame)
    for r, img in inputs.references:
        _write_png(d / "refs" / f"{r.name}.png", img)
    sf.write(d / "speak.wav", inputs.speak, inputs.sample_rate, subtype="PCM_16")
    sf.write(d / "listen.wav", inputs.listen, inputs.sample_rate, subtype="PCM_16")
    if inputs.truth_frames is not None:
        frames = inputs.truth_frames
        write_mp4(
            d / "truth.mp4",
            frames,
            inputs.case.fps,
            np.clip(inputs.speak + inputs.listen, -1, 1),
            inputs.sample_rate,
        )
    if inputs.truth_labels is not None:
        (d / "labels.json").write_text(json.dumps(inputs.truth_labels))
    (d / "case.json").write_text(json.dumps(inputs.case.to_dict(), indent=2) + "\n")


def load_inputs(d: Path) -> CaseInputs:
    """Read a materialised `inputs/` directory back."""
    d = Path(d)
    case = CaseSpec.from_dict(json.loads((d / "case.json").read_text()), where=str(d))
    refs = [(r, read_image(d / "refs" / f"{r.name}.png")) for r in case.references]
    speak, sr = sf.read(d / "speak.wav", dtype="float32")
    listen, _ = sf.read(d / "listen.wav", dtype="float32")
    truth = read_video(d / "truth.mp4")[0] if (d / "truth.mp4").is_file() else None
    labels = json.loads((d / "labels.json").read_text()) if (d / "labels.json").is_file() else None
    return CaseInputs(
        case=case,
        first_frame=read_image(d / "first_frame.png"),
        references=refs,
        speak=speak,
        listen=listen,
        truth_frames=truth,
        truth_labels=labels,
        sample_rate=int(sr),
    )
