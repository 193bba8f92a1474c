"""lpm.train.dpo: Diffusion-DPO post-training of Base LPM on Pareto-preferred candidates.

``candidates``  K candidates per condition from the current model, scored per dimension by the
                Stage probes (`generate_candidates`);
``pareto``      per-dimension scores and Pareto-preferred (winner, loser) pairs (pure);
``loss``        Diffusion-DPO for flow matching + the flow-matching regulariser (pure);
``data``        the candidates directory and the pairs as a training dataset;
``recipe``      `DPORecipe`, the registry and ``--set`` overrides;
``trainer``     `DPOTrainer` on the `lpm.train` step loop (checkpoints, resume, metrics, EMA).
"""

from lpm.train.dpo.candidates import CandidateSettings, CandidateSummary, generate_candidates
from lpm.train.dpo.data import CandidateSet, NoParetoPairsError, PairSet
from lpm.train.dpo.loss import DPOTerms, diffusion_dpo_loss
from lpm.train.dpo.pareto import DIMENSIONS, Pair, candidate_scores, pareto_pairs, preferred
from lpm.train.dpo.recipe import RECIPES, DPORecipe, apply_overrides, get_recipe

__all__ = [
    "DIMENSIONS",
    "RECIPES",
    "CandidateSet",
    "CandidateSettings",
    "CandidateSummary",
    "DPORecipe",
    "DPOTerms",
    "NoParetoPairsError",
    "Pair",
    "PairSet",
    "apply_overrides",
    "candidate_scores",
    "diffusion_dpo_loss",
    "generate_candidates",
    "get_recipe",
    "pareto_pairs",
    "preferred",
]
