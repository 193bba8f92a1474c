"""Quality of a model against the Stage ground truth on held-out identities (the lpm-nano table).

Runs (or resumes) `lpm bench run --suite stage-heldout` for a model bundle, then compares the
model with the ground-truth renderings of the same audio and script, read by the same probes:

- lip-sync: correlation of the probe's mouth opening with the labelled mouth curve while the
  character speaks (`truth_mouth_corr`), model / ground truth >= 0.8;
- mouth still while listening: mean probe mouth opening over listening frames, and the fraction
  of frames with the mouth open while only the partner speaks (`false_lip_rate`);
- identity: similarity of every frame to the reference (`id_similarity`), model / truth >= 0.9;
  also its 5th percentile and its drift (slope of the per-second means, per minute), which show
  a continuation that loses the character;
- text control: requested actions recognised in >= 70% of the text-controlled segments.

    python benchmarks/nano_quality.py [--model DIR] [--out runs/heldout] [--limit N]
    python benchmarks/nano_quality.py --online --model ONLINE_BUNDLE --name S --compare lpm-nano

``--online`` streams every case through the bundle's backbone + refiner; ``--compare SYSTEM``
adds the ratios to an already scored system of the same run directory (Online LPM must keep
>= 0.9 of Base LPM's lip-sync, listening stillness (1 - false lip rate), identity and text
control).

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

TRUTH = "ground-truth"


def _scores(out: Path, system: str) -> list[dict]:
    files = sorted((out / "systems" / system / "scores").glob("*.json"))
    return [json.loads(p.read_text()) for p in files]


def _mean(scores: list[dict], key: str, subsets: tuple[str, ...] | None = None) -> float | None:
    vals = [s["metrics"].get(key) for s in scores if subsets is None or s["subset"] in subsets]
    vals = [v for v in vals if v is not None]
    return float(np.mean(vals)) if vals else None


def _actions(scores: list[dict]) -> tuple[int, int]:
    checks = [i for s in scores for i in s["instructions"] if i["target"].startswith("action:")]
    return sum(i["recognised"] for i in checks), len(checks)


def summarise(out: Path, system: str) -> dict:
    gen, truth = _scores(out, system), _scores(out, TRUTH)
    speaking = ("speaking", "conversation", "diverse-motion")
    rows = {}
    for key, subsets in (("truth_mouth_corr", speaking), ("listen_mouth", None),
                         ("false_lip_rate", None), ("id_similarity", None),
                         ("id_similarity_p5", None), ("id_drift_per_min", None),
                         ("sync_corr", speaking)):  # fmt: skip
        rows[key] = {"model": _mean(gen, key, subsets), "truth": _mean(truth, key, subsets)}
    ok_g, n_g = _actions(gen)
    ok_t, n_t = _actions(truth)
    rows["action_recognised"] = {"model": ok_g / n_g if n_g else None,
                                 "truth": ok_t / n_t if n_t else None}  # fmt: skip
    ratio = lambda k: (rows[k]["model"] / rows[k]["truth"]
                       if rows[k]["model"] is not None and rows[k]["truth"] else None)  # fmt: skip
    result = {
        "system": system,
        "cases": len(gen),
        "action_segments": n_g,
        "rows": rows,
        "lip_sync_ratio": ratio("truth_mouth_corr"),
        "identity_ratio": ratio("id_similarity"),
    }
    result["pass"] = {
        "lip_sync_ratio>=0.8": (result["lip_sync_ratio"] or 0) >= 0.8,
        "identity_ratio>=0.9": (result["identity_ratio"] or 0) >= 0.9,
        "actions>=0.7": (rows["action_recognised"]["model"] or 0) >= 0.7,
        "listen_mouth<=truth+0.05": rows["listen_mouth"]["model"] is not None
        and rows["listen_mouth"]["model"] <= (rows["listen_mouth"]["truth"] or 0) + 0.05,
    }
    return result


def compare(result: dict, base: dict) -> dict:
    """Ratios of ``result``'s scores to ``base``'s on the four dimensions Online LPM must keep."""
    rows, brows = result["rows"], base["rows"]

    def ratio(model, ref):
        return None if model is None or not ref else model / ref

    still = lambda r: (
        None if r["false_lip_rate"]["model"] is None else 1 - r["false_lip_rate"]["model"]
    )  # noqa: E731,E501
    ratios = {
        "lip_sync": ratio(rows["truth_mouth_corr"]["model"], brows["truth_mouth_corr"]["model"]),
        "listening_stillness": ratio(still(rows), still(brows)),
        "identity": ratio(rows["id_similarity"]["model"], brows["id_similarity"]["model"]),
        "text_control": ratio(rows["action_recognised"]["model"],
                              brows["action_recognised"]["model"]),
    }  # fmt: skip
    passed = {f"{k}>=0.9": v is not None and v >= 0.9 for k, v in ratios.items()}
    return {"against": base["system"], "ratios": ratios, "pass": passed}


def print_table(r: dict) -> None:
    print(f"{'metric':<22}{'model':>10}{'truth':>10}")
    for key, row in r["rows"].items():
        fmt = lambda v: "n/a" if v is None else f"{v:.3f}"
        print(f"{key:<22}{fmt(row['model']):>10}{fmt(row['truth']):>10}")
    print(f"lip-sync ratio {r['lip_sync_ratio']}, identity ratio {r['identity_ratio']}, "
          f"{r['action_segments']} action segments")  # fmt: skip
    for k, v in r["pass"].items():
        print(f"  {k}: {'pass' if v else 'FAIL'}")
    if "compare" in r:
        c = r["compare"]
        print(f"against {c['against']}:")
        for k, v in c["ratios"].items():
            shown = "n/a" if v is None else f"{v:.3f}"
            print(f"  {k:<22}{shown:>8}  {'pass' if c['pass'][k + '>=0.9'] else 'FAIL'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="bundle (default: shipped)")
    parser.add_argument("--out", type=Path, default=Path("runs/heldout"))
    parser.add_argument("--name", default="lpm-nano")
    parser.add_argument("--limit", type=int, default=0)
    parser.add_argument("--steps", type=int, default=None, help="denoising steps (bundle's)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--online", action="store_true", help="stream with an online bundle")
    parser.add_argument("--compare", default="", help="a scored system to compare with")
    args = parser.parse_args()
    from lpm.bench.runner import RunConfig, run_suite
    from lpm.inference import shipped_bundle_path

    cfg = RunConfig(suite="stage-heldout", out=args.out, model=args.model or shipped_bundle_path(),
                    system=args.name, limit=args.limit, seed=args.seed,
                    steps=args.steps, online=args.online)  # fmt: skip
    run_suite(cfg)
    result = summarise(args.out, cfg.system_name)
    if args.compare:
        result["compare"] = compare(result, summarise(args.out, args.compare))
    print_table(result)
    print(json.dumps(result))


if __name__ == "__main__":
    main()
