"""Does a turn follow the cue or the character? Left and right head turns on held-out faces.

For each held-out Stage case (first frame, speech and description from `lpm bench`'s case
directory), the model generates the same seconds twice: once with "The character turns its
head to the left." and once with "... to the right." as a timed cue over ``--span``. The Stage
probe reads the head yaw of every frame (left is negative); the table gives the mean yaw over
the cued span of each and whether each went the asked way (mean beyond ``--degrees``).

    python benchmarks/nano_quality.py --model BUNDLE --out runs/heldout   # makes the cases
    python benchmarks/cue_direction.py --model BUNDLE --cases runs/heldout/cases \\
        --case listening-0011 --case listening-0008 --case speaking-0001

A model that binds direction to the cue turns both ways on every face; one that binds it to
the face turns the same way for both cues. The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

CUES = {
    "left": "The character turns its head to the left.",
    "right": "The character turns its head to the right.",
}


def _description(case: dict) -> str:
    """The case's whole-video prompt without its own instructions (its first sentence(s) about
    who the character is)."""
    text = case["instructions"][0]["text"]
    return text.split(" The character")[0]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default=None, help="bundle directory (default: lpm-nano)")
    parser.add_argument("--cases", default="runs/heldout/cases", help="lpm bench case directory")
    parser.add_argument("--case", action="append", default=None, help="case id (repeatable)")
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--span", type=float, nargs=2, default=(0.8, 3.5), help="cued span (s)")
    parser.add_argument("--degrees", type=float, default=10.0, help="mean yaw that counts")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from lpm.bench.backends import StageBackend
    from lpm.inference import ModelBundle, Pipeline, shipped_bundle_path
    from lpm.inference.pipeline import ScriptSegment
    from lpm.media import read_image

    root = Path(args.cases)
    ids = args.case or sorted(p.name for p in root.iterdir() if (p / "inputs").is_dir())
    if not ids:
        raise SystemExit(f"{root} holds no cases: run benchmarks/nano_quality.py first")
    model = Path(args.model) if args.model else shipped_bundle_path()
    pipe = Pipeline(ModelBundle.load(model))
    probes = StageBackend()
    rows = []
    for case_id in ids:
        inputs = root / case_id / "inputs"
        if not (inputs / "case.json").is_file():
            raise SystemExit(f"{inputs / 'case.json'} is missing: is {case_id} a case of {root}?")
        case = json.loads((inputs / "case.json").read_text())
        row = {"case": case_id}
        for side, cue in CUES.items():
            script = [
                ScriptSegment(start=0.0, end=args.seconds, text=_description(case)),
                ScriptSegment(start=args.span[0], end=args.span[1], text=cue),
            ]
            video = pipe.generate(
                read_image(inputs / "first_frame.png"), speak_audio=str(inputs / "speak.wav"),
                listen_audio=str(inputs / "listen.wav"), script=script, seconds=args.seconds,
                seed=args.seed,
            )  # fmt: skip
            yaw = probes.read(video.frames, video.fps).yaw
            a, b = int(args.span[0] * video.fps), int(args.span[1] * video.fps)
            row[side] = float(np.mean(yaw[a:b]))
        row["left_ok"] = row["left"] < -args.degrees
        row["right_ok"] = row["right"] > args.degrees
        rows.append(row)

    print(f"{'case':<22} {'left cue':>9} {'right cue':>10}   asked way")
    for r in rows:
        ok = f"{'L' if r['left_ok'] else '-'}{'R' if r['right_ok'] else '-'}"
        print(f"{r['case']:<22} {r['left']:>8.1f}° {r['right']:>9.1f}°   {ok}")
    both = sum(r["left_ok"] and r["right_ok"] for r in rows)
    followed = sum(r["left_ok"] + r["right_ok"] for r in rows)
    print(f"turns the asked way: {followed} / {2 * len(rows)}; both ways: {both} / {len(rows)}")
    print(json.dumps({"model": str(model), "seed": args.seed, "cases": rows,
                      "followed": followed, "both_ways": both}))  # fmt: skip


if __name__ == "__main__":
    main()
