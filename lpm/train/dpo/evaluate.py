"""Implicit reward accuracy of a post-trained policy on pairs, e.g. of conditions it never saw.

Training logs the reward accuracy of the batches it trains on; on a few hundred pairs that
quickly reaches 1 whether or not the preference generalises. `evaluate_pairs` scores every pair
of another candidates directory instead, over ``draws`` fixed noise draws per pair (the same
for every policy evaluated, so two runs compare on identical inputs).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import torch

from lpm.device import resolve_device
from lpm.train.dpo.data import CandidateSet, PairSet
from lpm.train.dpo.loss import diffusion_dpo_loss
from lpm.train.dpo.problem import pair_errors, pair_inputs
from lpm.train.dpo.recipe import DPORecipe

EVAL_DRAWS = 17
"""Purpose tag of the evaluation draws (distinct from training's)."""


@dataclass(kw_only=True)
class PairEvaluation:
    """Means over every (pair, draw)."""

    pairs: int
    draws: int
    reward_accuracy: float
    """Fraction with logit > 0: the policy prefers the winner more than the reference does."""
    dpo_loss: float
    """Mean -log sigmoid(logit) (log 2 = 0.693 for the reference itself)."""
    logit: float
    winner_vs_ref: float
    """Mean policy-minus-reference velocity MSE on the winners (< 0: predicted better)."""
    loser_vs_ref: float
    """The same on the losers."""


@torch.no_grad()
def evaluate_pairs(
    policy: torch.nn.Module,
    reference: torch.nn.Module,
    pairs: PairSet,
    recipe: DPORecipe,
    *,
    draws: int = 4,
    batch_size: int = 8,
    device: torch.device = torch.device("cpu"),
) -> PairEvaluation:
    """Score ``policy`` against ``reference`` on every pair (``recipe``: beta, noise sampling)."""
    if draws < 1 or batch_size < 1:
        raise ValueError(f"draws={draws} and batch_size={batch_size} must be >= 1")
    policy.eval()
    rows: dict[str, list[torch.Tensor]] = {"logit": [], "dpo": [], "w": [], "l": []}
    for draw in range(draws):
        for start in range(0, len(pairs), batch_size):
            batch = pairs.batch(list(range(start, min(len(pairs), start + batch_size))), device)
            inputs = pair_inputs(batch, recipe, draw, device, tag=EVAL_DRAWS)
            e_w, e_l = pair_errors(policy, inputs)
            r_w, r_l = pair_errors(reference, inputs)
            terms = diffusion_dpo_loss(e_w, e_l, r_w, r_l, beta=recipe.beta, fm_weight=0.0)
            for key, value in (("logit", terms.logit), ("dpo", terms.dpo), ("w", e_w - r_w),
                               ("l", e_l - r_l)):  # fmt: skip
                rows[key].append(value.float().cpu())
    cat = {k: torch.cat(v) for k, v in rows.items()}
    return PairEvaluation(
        pairs=len(pairs), draws=draws, reward_accuracy=float((cat["logit"] > 0).float().mean()),
        dpo_loss=float(cat["dpo"].mean()), logit=float(cat["logit"].mean()),
        winner_vs_ref=float(cat["w"].mean()), loser_vs_ref=float(cat["l"].mean()),
    )  # fmt: skip


def evaluate_run(
    run_dir: str | Path, candidates: str | Path, *, draws: int = 4, device: str = "cpu"
) -> PairEvaluation:
    """Evaluate a DPO run's latest checkpoint (EMA weights when present) against its reference
    on the Pareto pairs of ``candidates``, selected with the run's own settings."""
    from lpm.distill.models import resolve_checkpoint
    from lpm.models.dit.checkpoint import load_lpm_checkpoint
    from lpm.train.dpo.trainer import load_reference, select_run_pairs

    run_dir, dev = Path(run_dir), resolve_device(device)
    if not (run_dir / "recipe.json").is_file() or not (run_dir / "run.json").is_file():
        raise FileNotFoundError(f"{run_dir} is not a DPO run directory (no recipe.json/run.json)")
    recipe = DPORecipe.from_dict(json.loads((run_dir / "recipe.json").read_text()))
    recipe = dataclasses.replace(recipe, candidates=str(candidates))
    reference = load_reference(json.loads((run_dir / "run.json").read_text())["init"], dev)
    policy = load_lpm_checkpoint(resolve_checkpoint(run_dir), device=dev, dtype=torch.float32)
    found = CandidateSet(candidates)
    pairs = PairSet(found, select_run_pairs(found, recipe))
    return evaluate_pairs(policy, reference, pairs, recipe, draws=draws, device=dev)
