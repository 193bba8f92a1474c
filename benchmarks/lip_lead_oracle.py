"""How much of the held-out lip-sync gap is the hidden lip lead: the same model, told the lead.

Until 2026-12-04 a Stage character's mouth led its speech by 0, 1 or 2 frames, drawn with the
character and shown by nothing a model is given (`benchmarks/lip_sync_bound.py`); today every
character leads by `LIP_LEAD_FRAMES` (docs/stage.md, "Lip lead"), so this diagnoses models
trained on the old world and worlds given another lead. A model trained on many characters
learns one average lead. This diagnostic generates every held-out case with the
character's own speech moved by ``lead - assumed`` frames (earlier when the character leads
more than the model does), so a model whose own lead is ``assumed`` draws the mouth at the
character's lead, and scores the videos with the same probes as `benchmarks/nano_quality.py`.
It is an oracle, not a way to generate: the lead comes from the character's seed.

``--world-lead N`` asks the converse: the ground truth is rendered again (into ``--out``) in a
Stage world where every character's lead is N frames, and the videos a system already made
(``--videos DIR``, from the same audio, script and references) are scored against it.

    python benchmarks/lip_lead_oracle.py [--model BUNDLE] [--assumed 1] [--seed 0]
        [--out runs/heldout] [--name NAME] [--compare SYSTEM]
    python benchmarks/lip_lead_oracle.py --world-lead 1 --videos runs/heldout/systems/S/videos
        --out runs/heldout-lead1 --name S

``--compare`` names the same model's ordinary run in the same directory (scored by
`benchmarks/nano_quality.py`) to print both side by side. The last stdout line is one JSON
object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
from contextlib import contextmanager
from pathlib import Path

import numpy as np

SPEAKING_SUBSETS = ("speaking", "conversation", "diverse-motion")


def shift_speech(wave: np.ndarray, frames: int, fps: float, sample_rate: int) -> np.ndarray:
    """``wave`` moved ``frames`` video frames earlier (later when negative), length kept, the
    gap filled with silence."""
    n = int(round(frames * sample_rate / fps))
    out = np.zeros_like(wave)
    if n > 0:
        out[: len(wave) - n] = wave[n:]
    elif n < 0:
        out[-n:] = wave[: len(wave) + n]
    else:
        out[:] = wave
    return out


@contextmanager
def world_lead(frames: int):
    """Every Stage character rendered inside this block has a lip lead of ``frames``."""
    import lpm.data.stage.clip as clip

    original = clip.make_character

    def make(seed: int):
        return dataclasses.replace(original(seed), lip_lead_frames=frames)

    clip.make_character = make
    try:
        yield
    finally:
        clip.make_character = original


def _mean(scores: list[dict], key: str) -> float | None:
    vals = [s["metrics"].get(key) for s in scores if s["subset"] in SPEAKING_SUBSETS]
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def _scores(out: Path, system: str) -> list[dict]:
    files = sorted((out / "systems" / system / "scores").glob("*.json"))
    return [json.loads(p.read_text()) for p in files]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: shipped)")
    parser.add_argument("--out", type=Path, default=Path("runs/heldout"))
    parser.add_argument("--assumed", type=int, default=1, help="the model's own lead (frames)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--name", default="", help="system name (default: oracle-a<assumed>)")
    parser.add_argument("--compare", default="", help="the same model's ordinary run")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--world-lead", type=int, default=None, help="every character's lead")
    parser.add_argument("--videos", type=Path, default=None, help="with --world-lead")
    args = parser.parse_args()
    if args.world_lead is not None:
        if args.videos is None or not args.name:
            parser.error("--world-lead scores made videos: give --videos DIR and --name NAME")
        score_world(args)
        return

    from tqdm import tqdm

    from lpm.bench.materialize import materialize
    from lpm.bench.runner import RunConfig, _generate, run_suite
    from lpm.bench.suites import load_suite
    from lpm.data.stage.character import make_character
    from lpm.inference import Pipeline, shipped_bundle_path

    model = args.model or shipped_bundle_path()
    name = args.name or f"oracle-a{args.assumed}s{args.seed}"
    suite = load_suite("stage-heldout")
    cases = suite.cases[: args.limit] if args.limit else suite.cases
    videos = args.out / "systems" / name / "oracle-videos"
    videos.mkdir(parents=True, exist_ok=True)
    pipeline = Pipeline.from_pretrained(model)
    leads: dict[str, int] = {}
    for case in tqdm(cases, desc=f"oracle lead [{name}]", unit="case"):
        inputs = materialize(case, suite.root, args.out / "cases" / case.id)
        lead = make_character(inputs.case.stage.performer_seed).lip_lead_frames
        leads[case.id] = lead
        path = videos / f"{case.id}.mp4"
        if path.is_file():
            continue
        speak = shift_speech(inputs.speak, lead - args.assumed, case.fps, inputs.sample_rate)
        tmp = path.with_suffix(".part.mp4")
        _generate(pipeline, dataclasses.replace(inputs, speak=speak), tmp, args.seed, None)
        tmp.replace(path)
    run_suite(RunConfig(suite="stage-heldout", out=args.out, videos=videos, system=name,
                        limit=args.limit, progress=False))  # fmt: skip

    rows = {"ground-truth": _mean(_scores(args.out, "ground-truth"), "truth_mouth_corr")}
    if args.compare:
        rows[args.compare] = _mean(_scores(args.out, args.compare), "truth_mouth_corr")
    rows[name] = _mean(_scores(args.out, name), "truth_mouth_corr")
    truth = rows["ground-truth"]
    print(f"{'system':24s} {'lip-sync':>9s} {'/ truth':>8s}")
    for k, v in rows.items():
        print(f"{k:24s} {v:9.3f} {v / truth:8.3f}")
    counts = {str(a): sum(1 for v in leads.values() if v == a) for a in (0, 1, 2)}
    print(json.dumps({"assumed": args.assumed, "seed": args.seed, "leads": counts,
                      "lip_sync": rows, "ratio": rows[name] / truth}))  # fmt: skip


def score_world(args) -> None:
    """Score ``args.videos`` against ground truth rendered with every lead ``world_lead``."""
    from lpm.bench.runner import RunConfig, run_suite

    with world_lead(args.world_lead):
        run_suite(RunConfig(suite="stage-heldout", out=args.out, videos=args.videos,
                            system=args.name, limit=args.limit))  # fmt: skip
    rows = {k: _mean(_scores(args.out, k), "truth_mouth_corr") for k in ("ground-truth", args.name)}
    truth = rows["ground-truth"]
    print(f"every lead {args.world_lead}: {'system':24s} {'lip-sync':>9s} {'/ truth':>8s}")
    for k, v in rows.items():
        print(f"{'':14s}{k:24s} {v:9.3f} {v / truth:8.3f}")
    print(json.dumps({"world_lead": args.world_lead, "lip_sync": rows,
                      "ratio": rows[args.name] / truth}))  # fmt: skip


if __name__ == "__main__":
    main()
