"""Real-footage pipeline throughput per stage, and its accuracy on held-out Stage raw scenes.

Renders (or reuses) held-out Stage raw scenes, runs every operator of `lpm.data.prep` on each in
this process, and reports video minutes processed per CPU-minute for every stage (CPU time of
the whole process, all threads), then scores the written clips against the scenes' ground
truth (accuracy per state, and where the wrong frames lie: `evaluate.label_errors`). The last
stdout line is one JSON object.

    python benchmarks/prep_throughput.py [--scenes 8] [--seconds 40] [--resolution 128]
        [--raw DIR] [--out DIR] [--detector stage] [--threads 1]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import torch

from lpm.data.prep import pipeline as P
from lpm.data.prep.config import stage_config
from lpm.data.prep.evaluate import score_run
from lpm.data.prep.media import list_inputs
from lpm.data.prep.runner import _finish, finalize, prepare_out
from lpm.data.prep.write import op_audio_semantics_refs_write
from lpm.data.stage.writer import StageDatasetConfig, build_dataset

STAGES = ("load", "shots", "detect", "filters", "tracks", "labels", "write")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scenes", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=40.0)
    ap.add_argument("--resolution", type=int, default=128)
    ap.add_argument("--seed", type=int, default=11)
    ap.add_argument("--raw", type=Path, default=None, help="existing raw scenes (else rendered)")
    ap.add_argument("--out", type=Path, default=None)
    ap.add_argument("--detector", default="stage")
    ap.add_argument("--threads", type=int, default=1)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    tmp = Path(tempfile.mkdtemp(prefix="prep-bench-"))
    raw = args.raw or tmp / "raw"
    if args.raw is None:
        build_dataset(
            StageDatasetConfig(
                out=raw,
                clips=args.scenes,
                seconds=args.seconds,
                resolution=args.resolution,
                seed=args.seed,
                raw=True,
                split="heldout",
            ),
            progress=False,
        )
    out = args.out or tmp / "out"
    cfg = stage_config(detect={"backend": args.detector})
    prepare_out(out, cfg)
    P.backend_for(cfg)  # model loading is not per-video work
    cpu = dict.fromkeys(STAGES, 0.0)
    wall = dict.fromkeys(STAGES, 0.0)
    video_s = 0.0
    for path in list_inputs(raw):
        work = P.VideoWork(path=path)
        for stage in STAGES:
            c0, w0 = time.process_time(), time.perf_counter()
            if stage == "write":
                op_audio_semantics_refs_write(work, cfg, out)
            else:
                P.OPS[stage](work, cfg)
            cpu[stage] += time.process_time() - c0
            wall[stage] += time.perf_counter() - w0
        video_s += work.source.seconds
        work.funnel["input"] = [1, round(work.source.seconds, 3)]
        report = {
            "path": str(path),
            "status": "ok",
            "source_id": work.source.id,
            "shots": [s.to_dict() for s in work.shots],
            "entries": work.entries,
            "funnel": work.funnel,
            "clips_dropped": [],
        }
        _finish(out, path, report)
    summary = finalize(out, cfg)
    scores = score_run(raw, out)
    video_min = video_s / 60.0
    total_cpu = sum(cpu.values())
    print(
        f"{len(list_inputs(raw))} scenes, {video_min:.2f} video minutes, "
        f"{args.resolution} px, detector={args.detector}, torch threads={args.threads}"
    )
    print(f"{'stage':>8} | {'CPU s':>7} | {'wall s':>7} | video min / CPU min")
    for s in STAGES:
        rate = video_min / max(cpu[s] / 60.0, 1e-9)
        print(f"{s:>8} | {cpu[s]:7.2f} | {wall[s]:7.2f} | {rate:8.2f}")
    print(
        f"{'total':>8} | {total_cpu:7.2f} | {sum(wall.values()):7.2f} | "
        f"{video_min / (total_cpu / 60.0):8.2f}"
    )
    print("funnel (count, seconds):", json.dumps(summary["funnel"]))
    print(
        f"label accuracy {scores['label_accuracy']:.4f} over {scores['frames']} frames "
        f"{scores['label_accuracy_by_state']}; boundaries recall "
        f"{scores['boundary_recall']:.3f} precision {scores['boundary_precision']:.3f}; "
        f"dropped shots with the right reason {scores['drops_right_reason']}/"
        f"{scores['drops']} {scores['drops_by_kind']}; clean shots dropped "
        f"{sum(scores['clean_dropped'].values())}/{scores['clean_shots']} {scores['clean_dropped']}"
    )
    print(f"wrong label frames by kind ({sum(scores['label_errors'].values())}):")
    for kind, n in scores["label_errors"].items():
        print(f"  {n:5d}  {kind}")
    result = {
        "video_minutes": round(video_min, 3),
        "cpu_seconds": {s: round(cpu[s], 3) for s in STAGES},
        "video_min_per_cpu_min": {
            **{s: round(video_min / max(cpu[s] / 60.0, 1e-9), 3) for s in STAGES},
            "total": round(video_min / (total_cpu / 60.0), 3),
        },
        "clips": summary["clips"],
        "scores": {k: v for k, v in scores.items() if k != "wrong_reasons"},
        "wrong_reasons": scores["wrong_reasons"],
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
