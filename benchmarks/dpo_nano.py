"""DPO post-training of a bundle, measured end to end (the figures of docs/training.md).

1. candidates for the training conditions (`stage-dpo` cases 0 .. T-1) and for unseen ones
   (cases T .. T+E-1), K per condition, scored by the Stage probes;
2. the Pareto pairs of both sets (the recipe's dimensions, tie tolerance and margin);
3. a DPO run on the training pairs;
4. the run's implicit reward accuracy against its reference on both sets of pairs;
5. the post-trained bundle generates the unseen conditions again with the same seeds, and its
   candidates are compared with the base model's, seed by seed: mean score per dimension and
   how often one is Pareto-preferred to the other.

    python benchmarks/dpo_nano.py [--model DIR] [--out runs/dpo-nano-bench] [--train 8]
        [--eval 16] [--candidates 4] [--set key=value ...]

Every step is skipped when its output exists, so a killed run resumes. The last stdout line is
one JSON object.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

import numpy as np


def _candidates(model: str, out: Path, start: int, limit: int, k: int) -> dict:
    from lpm.train.dpo import CandidateSettings, generate_candidates

    settings = CandidateSettings(
        model=model, start=start, limit=limit, candidates=k, progress=False
    )
    s = generate_candidates(settings, out)
    return {"conditions": s.conditions, "candidates": s.candidates, "new": s.new,
            "seconds": round(s.seconds, 1)}  # fmt: skip


def _train(recipe, run: Path) -> dict:
    from lpm.parallel import DistInfo
    from lpm.train.checkpoint import latest_checkpoint
    from lpm.train.dpo.trainer import DPOTrainer

    done = latest_checkpoint(run)
    if done is None or int(done.name.split("-")[1]) < recipe.steps:
        t0 = time.perf_counter()
        trainer = DPOTrainer(recipe, run, dist_info=DistInfo(), resume=done is not None)
        trainer.fit()
        (run / "wall_s.txt").write_text(f"{time.perf_counter() - t0:.1f}\n")
    records = [json.loads(line) for line in (run / "metrics.jsonl").open()]
    keys = ("dpo_loss", "reward_accuracy", "fm_loss", "logit", "winner_vs_ref", "loser_vs_ref")
    windows = []
    for a in range(0, len(records), 10):
        w = records[a : a + 10]
        row = {k: round(float(np.mean([r[k] for r in w])), 4) for k in keys}
        windows.append({"steps": f"{w[0]['step']}-{w[-1]['step']}", **row})
    return {"windows": windows, "steps_per_s": records[-1]["steps_per_s"]}


def _compare(base: Path, dpo: Path, dims: tuple[str, ...], recipe) -> dict:
    """Seed-by-seed comparison of two candidate sets of the same conditions and seeds: mean
    score differences on ``dims``, Pareto preference on the recipe's dimensions."""
    from lpm.train.dpo import CandidateSet, preferred

    a, b = CandidateSet(base), CandidateSet(dpo)
    kw = {"tie_tolerance": recipe.tie_tolerance, "margin": recipe.margin}
    wins = losses = 0
    deltas: dict[str, list[float]] = {d: [] for d in dims}
    for ra, rb in zip(a.records, b.records, strict=True):
        assert ra.id == rb.id and ra.seeds == rb.seeds
        for sa, sb in zip(ra.scores, rb.scores, strict=True):
            wins += preferred(sb, sa, recipe.dimensions, **kw)
            losses += preferred(sa, sb, recipe.dimensions, **kw)
            for d in dims:
                if sa[d] is not None and sb[d] is not None:
                    deltas[d].append(sb[d] - sa[d])
    n = sum(r.size for r in a.records)
    return {"samples": n, "dpo_preferred": wins, "base_preferred": losses,
            "mean_delta": {d: round(float(np.mean(v)), 4) if v else None
                           for d, v in deltas.items()},
            "delta_se": {d: round(float(np.std(v) / np.sqrt(len(v))), 4) if len(v) > 1 else None
                         for d, v in deltas.items()}}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="", help="bundle (default: the shipped lpm-nano)")
    parser.add_argument("--out", type=Path, default=Path("runs/dpo-nano-bench"))
    parser.add_argument("--train", type=int, default=8, help="training conditions")
    parser.add_argument("--eval", type=int, default=16, help="unseen conditions")
    parser.add_argument("--candidates", type=int, default=4)
    parser.add_argument("--recipe", default="nano-dpo")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    args = parser.parse_args()
    from lpm.inference import shipped_bundle_path
    from lpm.inference.pack import pack_finetuned
    from lpm.train.dpo import CandidateSet, apply_overrides, get_recipe
    from lpm.train.dpo.evaluate import evaluate_run
    from lpm.train.dpo.trainer import select_run_pairs

    out, k = args.out, args.candidates
    model = args.model or str(shipped_bundle_path())
    result: dict = {"model": model, "candidates_per_condition": k}
    result["train_candidates"] = _candidates(model, out / "cands-train", 0, args.train, k)
    result["eval_candidates"] = _candidates(model, out / "cands-eval", args.train, args.eval, k)
    recipe = apply_overrides(get_recipe(args.recipe), args.overrides)
    recipe = dataclasses.replace(recipe, candidates=str(out / "cands-train"))
    for name in ("train", "eval"):
        found = CandidateSet(out / f"cands-{name}")
        result[f"{name}_pairs"] = len(select_run_pairs(found, recipe))
    result["training"] = _train(recipe, out / "run")
    for name in ("train", "eval"):
        ev = evaluate_run(out / "run", out / f"cands-{name}", draws=4)
        result[f"{name}_pair_eval"] = dataclasses.asdict(ev)
    bundle = out / "bundle"
    if not (bundle / "bundle.json").is_file():
        pack_finetuned(model, checkpoint=out / "run", out=bundle, half=False)
    result["eval_candidates_dpo"] = _candidates(
        str(bundle), out / "cands-eval-dpo", args.train, args.eval, k
    )
    dims = ("lip_sync", "stillness", "identity", "text", "motion")
    result["samples"] = _compare(out / "cands-eval", out / "cands-eval-dpo", dims, recipe)
    for w in result["training"]["windows"]:
        print(w)
    for name in ("train", "eval"):
        print(f"{name} pairs: {result[f'{name}_pairs']}; policy vs reference:",
              {k: round(v, 4) for k, v in result[f"{name}_pair_eval"].items()})  # fmt: skip
    print("samples on unseen conditions (DPO - base):", result["samples"])
    print(json.dumps(result))


if __name__ == "__main__":
    main()
