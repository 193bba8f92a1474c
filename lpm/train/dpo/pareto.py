"""Per-dimension scores of a candidate and Pareto-preferred (winner, loser) pairs. Pure.

A candidate's scores are read off its LPM-Bench metrics (`lpm.bench.metrics`), each oriented so
that higher is better. Candidate a is *Pareto-preferred* to b (DESIGN §2 e: better on at least
one dimension, worse on none) when, over the dimensions scored for both,

    a_d >= b_d - tie_tolerance   for every d     (no worse, up to score noise), and
    a_d >  b_d + margin          for at least one d.

With ``margin >= tie_tolerance`` the relation is antisymmetric: no two candidates are each
preferred to the other.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

Scores = Mapping[str, float | None]
"""Dimension name -> score (higher is better), None where the case cannot score it."""


def _first(*values: float | None) -> float | None:
    return next((v for v in values if v is not None), None)


def _lip_sync(m: Scores, dims: Scores) -> float | None:
    # the labelled mouth curve when the case has one (Stage), else the speech envelope
    return _first(m.get("truth_mouth_corr"), m.get("sync_corr"))


def _stillness(m: Scores, dims: Scores) -> float | None:
    listen, false_lip = m.get("listen_mouth"), m.get("false_lip_rate")
    if listen is not None:  # the labelled listening frames (Stage)
        return 1.0 - listen
    return None if false_lip is None else 1.0 - false_lip


DIMENSIONS: dict[str, tuple[str, Callable[[Scores, Scores], float | None]]] = {
    "lip_sync": ("probe mouth vs the labelled mouth while speaking (else vs the speech envelope)",
                 _lip_sync),
    "stillness": ("1 - mean probe mouth opening while listening (else 1 - false lip rate)",
                  _stillness),
    "identity": ("similarity of every frame to the references",
                 lambda m, d: m.get("id_similarity")),
    "text": ("fraction of requested actions and expressions recognised",
             lambda m, d: m.get("text_accuracy")),
    "motion": ("LPM-Bench motion score against the ground truth", lambda m, d: d.get("motion")),
    "sync": ("LPM-Bench audio-video sync score", lambda m, d: d.get("sync")),
}  # fmt: skip
"""Name -> (meaning, reader of (bench metrics, bench dimension scores))."""


def candidate_scores(metrics: Scores, bench_dims: Scores) -> dict[str, float | None]:
    """Every dimension of `DIMENSIONS` for one candidate's LPM-Bench metrics and dimension
    scores (`lpm.bench.scoring.CaseScore.metrics` / ``.dims``)."""
    out = {}
    for name, (_, read) in DIMENSIONS.items():
        value = read(metrics, bench_dims)
        out[name] = None if value is None else float(value)
    return out


def preferred(
    a: Scores, b: Scores, dimensions: Sequence[str], *, tie_tolerance: float, margin: float
) -> bool:
    """Whether ``a`` is Pareto-preferred to ``b`` on the ``dimensions`` both have scores for
    (False when they share none)."""
    common = [d for d in dimensions if a.get(d) is not None and b.get(d) is not None]
    if not common:
        return False
    no_worse = all(a[d] >= b[d] - tie_tolerance for d in common)
    return no_worse and any(a[d] > b[d] + margin for d in common)


def pareto_pairs(
    scores: Sequence[Scores],
    dimensions: Sequence[str],
    *,
    tie_tolerance: float,
    margin: float,
    max_pairs: int = 0,
) -> list[tuple[int, int]]:
    """(winner, loser) index pairs among the candidates of one condition.

    Every ordered pair where the first is Pareto-preferred to the second is kept; ``max_pairs``
    > 0 keeps that many, those with the largest summed lead over the shared dimensions first
    (ties by index, so the result is deterministic).
    """
    found = []
    for i, a in enumerate(scores):
        for j, b in enumerate(scores):
            if i != j and preferred(a, b, dimensions, tie_tolerance=tie_tolerance, margin=margin):
                lead = sum(
                    a[d] - b[d] for d in dimensions if a.get(d) is not None and b.get(d) is not None
                )
                found.append((-lead, i, j))
    found.sort()
    if max_pairs > 0:
        found = found[:max_pairs]
    return sorted((i, j) for _, i, j in found)


@dataclass(frozen=True, kw_only=True)
class Pair:
    """A winner and a loser among the candidates of one condition."""

    condition: int
    """Index of the condition in its `CandidateSet`."""
    winner: int
    """Candidate index of the winner."""
    loser: int
    """Candidate index of the loser."""


def select_pairs(
    per_condition: Sequence[Sequence[Scores]],
    dimensions: Sequence[str],
    *,
    tie_tolerance: float,
    margin: float,
    max_pairs_per_condition: int = 0,
) -> list[Pair]:
    """Pareto pairs of every condition, in condition order (see `pareto_pairs`)."""
    return [
        Pair(condition=c, winner=win, loser=lose)
        for c, scores in enumerate(per_condition)
        for win, lose in pareto_pairs(
            scores,
            dimensions,
            tie_tolerance=tie_tolerance,
            margin=margin,
            max_pairs=max_pairs_per_condition,
        )  # fmt: skip
    ]
