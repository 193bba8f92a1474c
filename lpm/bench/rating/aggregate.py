"""Aggregate human ratings: majority vote per pair, Good/Same/Bad rates, bootstrap intervals.

Per pair and dimension the raters' votes (A's perspective) are reduced by majority; a three-way
tie (one good, one same, one bad) counts as Same. Rates are fractions of pairs. Confidence
intervals resample pairs with replacement (`n_boot` times, seeded) and take the 2.5th and 97.5th
percentiles. Likert scores are averaged per system over every rating, with intervals that
resample pairs likewise.
"""

from __future__ import annotations

from collections import Counter, defaultdict

import numpy as np

from lpm.bench.rating.store import RATING_DIMENSIONS


def majority(votes: list[str]) -> str:
    """The most common of good/same/bad; a tie between different labels is `same`."""
    if not votes:
        raise ValueError("majority of no votes")
    counts = Counter(votes).most_common()
    if len(counts) > 1 and counts[0][1] == counts[1][1]:
        return "same"
    return counts[0][0]


def _ci(values: np.ndarray, rng: np.random.Generator, n_boot: int, stat) -> list[float]:
    if len(values) == 0:
        return [float("nan"), float("nan")]
    idx = rng.integers(0, len(values), size=(n_boot, len(values)))
    boots = np.array([stat(values[i]) for i in idx])
    return [float(np.percentile(boots, 2.5)), float(np.percentile(boots, 97.5))]


def aggregate_ratings(ratings: list[dict], *, n_boot: int = 1000, seed: int = 0) -> dict:
    """Aggregate exported ratings (`RatingStore.export`) per system pair.

    Returns:
        {"pairs": [{"a", "b", "n_pairs", "gsb": {dim: {good, same, bad, net, good_ci, bad_ci,
        net_ci}}, "likert": {"a": {mean, ci}, "b": {mean, ci}}}]}; `net` = good - bad.
    """
    rng = np.random.default_rng(seed)
    by_systems: dict[tuple[str, str], dict[int, list[dict]]] = defaultdict(
        lambda: defaultdict(list)
    )
    for r in ratings:
        by_systems[(r["system_a"], r["system_b"])][r["pair"]].append(r)
    result = []
    for (a, b), pairs in sorted(by_systems.items()):
        pair_ids = sorted(pairs)
        gsb = {}
        for d in RATING_DIMENSIONS:
            votes = [majority([r["gsb"][d] for r in pairs[p]]) for p in pair_ids]
            code = np.array([{"good": 1, "same": 0, "bad": -1}[v] for v in votes])
            gsb[d] = {
                "good": float((code == 1).mean()),
                "same": float((code == 0).mean()),
                "bad": float((code == -1).mean()),
                "net": float(code.mean()),
                "good_ci": _ci(code, rng, n_boot, lambda x: (x == 1).mean()),
                "bad_ci": _ci(code, rng, n_boot, lambda x: (x == -1).mean()),
                "net_ci": _ci(code, rng, n_boot, np.mean),
            }
        likert = {}
        for side in ("a", "b"):
            per_pair = np.array(
                [np.mean([r[f"likert_{side}"] for r in pairs[p]]) for p in pair_ids]
            )
            likert[side] = {
                "mean": float(per_pair.mean()),
                "ci": _ci(per_pair, rng, n_boot, np.mean),
            }
        result.append(
            {
                "a": a,
                "b": b,
                "n_pairs": len(pair_ids),
                "raters_per_pair": float(np.mean([len(pairs[p]) for p in pair_ids])),
                "gsb": gsb,
                "likert": likert,
            }
        )
    return {"format": "lpm-bench-human/1", "pairs": result}
