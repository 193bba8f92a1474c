"""`DPOTrainer`: Diffusion-DPO post-training of Base LPM on the training loop of `lpm.train`.

Legend: B pairs in this rank's batch, C latent channels, F latent frames, h/w latent grid.

One optimiser step (`DPOTrainer.train_step`):
  1. this rank's slice of the global batch of Pareto pairs (`StageSampler` over a `PairSet`);
  2. per pair, one noise level (Base training's sampler and shift), one noise tensor and the
     dropout flags, all seeded by (seed, step, pair index): winner and loser get the *same*
     noise at the *same* level, so their errors differ only by their content (`pair_inputs`);
  3. the policy and the frozen reference predict the velocity of the 2B noisy latents (winners
     then losers) with the pair's stored conditions: text, both audio streams, first-frame and
     global references, exactly as the candidates were generated;
  4. `diffusion_dpo_loss` on the per-sample velocity MSEs, plus ``fm_weight`` times the
     policy's flow-matching loss on the winners;
  5. backward, clip, AdamW, LR schedule, EMA (the machinery of `lpm train`).

The policy and the reference both start from ``init`` (default: the bundle that generated the
candidates). Checkpoints, resume, ``metrics.jsonl`` and plots are `StepLoop`'s; the pairs of
the run are written to ``pairs.json`` and checked on resume.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import torch

from lpm.distill.dmd import optimizer_step
from lpm.distill.models import freeze, init_from, resolve_checkpoint
from lpm.models.dit.checkpoint import load_lpm_checkpoint
from lpm.models.dit.model import LPMTransformer
from lpm.parallel import DistInfo, all_reduce_mean, parallelize
from lpm.train.batch import StageSampler
from lpm.train.checkpoint import latest_checkpoint
from lpm.train.determinism import seed_everything, set_deterministic
from lpm.train.dpo.data import CandidateSet, NoParetoPairsError, PairSet
from lpm.train.dpo.loss import diffusion_dpo_loss
from lpm.train.dpo.pareto import Pair
from lpm.train.dpo.problem import pair_errors, pair_inputs
from lpm.train.dpo.recipe import DPORecipe
from lpm.train.ema import EMA
from lpm.train.metrics import DEFAULT_SERIES, MetricsLog
from lpm.train.schedule import build_optimizer
from lpm.train.trainer import StepLoop

log = logging.getLogger(__name__)

PAIRS_NAME = "pairs.json"


def load_reference(init: str, device: torch.device) -> LPMTransformer:
    """The frozen reference model: a Base LPM bundle, checkpoint or run directory."""
    model = load_lpm_checkpoint(resolve_checkpoint(init), device=device, dtype=torch.float32)
    if model.cfg.attention != "bidirectional":
        raise ValueError(
            f"init {init} has attention={model.cfg.attention!r}; DPO post-trains Base LPM "
            "(a bidirectional model)"
        )
    return freeze(model)


def select_run_pairs(candidates: CandidateSet, recipe: DPORecipe) -> list[Pair]:
    """The recipe's Pareto pairs of ``candidates``; `NoParetoPairsError` saying how to get
    more when there are none."""
    pairs = candidates.pairs(
        recipe.dimensions, tie_tolerance=recipe.tie_tolerance, margin=recipe.margin,
        max_pairs_per_condition=recipe.max_pairs_per_condition,
    )  # fmt: skip
    if not pairs:
        raise NoParetoPairsError(
            f"no Pareto-preferred pair among the {candidates.num_candidates} candidates of "
            f"{len(candidates)} conditions in {candidates.root} (dimensions "
            f"{', '.join(recipe.dimensions)}; tie_tolerance={recipe.tie_tolerance}, "
            f"margin={recipe.margin}). Get more by generating more candidates per condition "
            "(`lpm dpo candidates --candidates 8`, a new --out) or more conditions (a larger "
            "--limit, same --out), or by comparing fewer dimensions or a smaller margin "
            "(--set dimensions=... / margin=...)"
        )
    return pairs


class DPOTrainer(StepLoop):
    """Owns the policy, the frozen reference, the pairs and the run directory of a DPO run."""

    plot_series = (
        *DEFAULT_SERIES,
        ("dpo_loss", "DPO loss", "dpo_loss.png", False),
        ("reward_accuracy", "implicit reward accuracy", "reward_accuracy.png", False),
    )

    def __init__(
        self, recipe: DPORecipe, run_dir: str | Path, *, dist_info: DistInfo,
        resume: bool = False, progress: bool = True,
    ) -> None:  # fmt: skip
        if not recipe.candidates:
            raise ValueError(
                "DPO needs candidates: make them with `lpm dpo candidates --out DIR` and pass "
                "--candidates DIR (or --set candidates=DIR)"
            )
        self.recipe, self.dist, self.progress = recipe, dist_info, progress
        self.run_dir = Path(run_dir)
        set_deterministic(recipe.deterministic)
        seed_everything(recipe.seed)
        self.device = dist_info.device
        self.bf16 = self.device.type == "cuda" and recipe.mixed_precision == "bf16"
        self.candidates = CandidateSet(recipe.candidates)
        self.pairs = PairSet(self.candidates, select_run_pairs(self.candidates, recipe))
        if len(self.pairs) < recipe.batch_size:
            raise ValueError(
                f"only {len(self.pairs)} Pareto pairs for batch_size={recipe.batch_size}; lower "
                "--set batch_size or generate more candidates"
            )
        log.info("%d Pareto pairs from %d of %d conditions in %s", len(self.pairs),
                 len({p.condition for p in self.pairs.pairs}), len(self.candidates),
                 self.candidates.root)  # fmt: skip
        self.init = recipe.init or self.candidates.spec.model
        self.reference = load_reference(self.init, self.device)
        self.cfg = self.reference.cfg
        self._check_conditions()
        self.model = parallelize(
            init_from(self.cfg, self.reference, "", self.device),
            fsdp=dist_info.world_size > 1,
            activation_checkpointing=recipe.activation_checkpointing, compile=recipe.compile,
            mixed_precision="bf16" if self.bf16 else None,
        )  # fmt: skip
        self.optimizer, self.scheduler = build_optimizer(self.model, recipe)
        self.ema = EMA(self.model, recipe.ema_decay) if recipe.ema_decay > 0 else None
        self.sampler = StageSampler(
            self.pairs, [self.pairs.subsets], global_batch=recipe.batch_size,
            rank=dist_info.rank, world_size=dist_info.world_size, seed=recipe.seed,
        )  # fmt: skip
        self.metrics = MetricsLog(self.run_dir)
        self.step = 0
        if resume:
            self._check_resumed_pairs()
        self._prepare_run_dir(resume)
        if self.dist.is_main and self.step == 0:
            (self.run_dir / PAIRS_NAME).write_text(self._pairs_json())

    # ---- set-up ------------------------------------------------------------------------------
    def _check_conditions(self) -> None:
        cfg, first = self.cfg, self.pairs.pairs[0].condition
        widths = {
            "text": (self.candidates.tensor(first, "text").shape[-1], cfg.text_dim),
            "speak_audio": (self.candidates.tensor(first, "speak_audio").shape[-1], cfg.audio_dim),
            "x0": (self.candidates.tensor(first, "x0").shape[1], cfg.in_channels),
        }  # fmt: skip
        bad = {k: v for k, v in widths.items() if v[0] != v[1]}
        if bad:
            raise ValueError(
                f"the candidates in {self.candidates.root} do not fit the model {self.init} "
                f"((stored, expected) widths {bad}); make candidates with the same bundle"
            )

    def _pairs_json(self) -> str:
        r = self.recipe
        rows = [[self.candidates.records[p.condition].id, p.winner, p.loser]
                for p in self.pairs.pairs]  # fmt: skip
        return json.dumps({"candidates": str(self.candidates.root.resolve()),
                           "dimensions": list(r.dimensions), "tie_tolerance": r.tie_tolerance,
                           "margin": r.margin, "pairs": rows}, indent=1)  # fmt: skip

    def run_info(self) -> dict[str, Any]:
        return {"init": str(self.init), "candidates": str(self.candidates.root.resolve()),
                "conditions": len(self.candidates), "pairs": len(self.pairs)}  # fmt: skip

    def _check_resumed_pairs(self) -> None:
        """Refuse to resume a run whose pairs were different (before anything is written)."""
        path = self.run_dir / PAIRS_NAME
        if latest_checkpoint(self.run_dir) is None or not path.is_file():
            return
        if json.loads(path.read_text()) != json.loads(self._pairs_json()):
            raise ValueError(
                f"the pairs selected now differ from those of the run in {self.run_dir} (were "
                "candidates added or the selection settings changed?); resume with the same "
                "candidates and settings, or start a new --out"
            )

    # ---- one step ----------------------------------------------------------------------------
    def train_step(self) -> dict[str, Any]:
        """Run optimiser step ``self.step`` and return its metrics (averaged over ranks)."""
        recipe = self.recipe
        batch = self.pairs.batch(self.sampler.next_indices(0), self.device)
        inputs = pair_inputs(batch, recipe, self.step, self.device)
        self.model.train()
        with self._autocast():
            e_w, e_l = pair_errors(self.model, inputs)
            with torch.no_grad():
                r_w, r_l = pair_errors(self.reference, inputs)
        terms = diffusion_dpo_loss(e_w, e_l, r_w, r_l, beta=recipe.beta, fm_weight=recipe.fm_weight)
        lr = self.scheduler.get_last_lr()[0]
        grad_norm = optimizer_step(
            self.model, terms.loss, self.optimizer, self.scheduler, recipe.grad_clip
        )
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        mean = lambda t: float(all_reduce_mean(t.detach().float().mean()))  # noqa: E731
        return {
            "step": self.step, "stage": "dpo", "loss": mean(terms.loss),
            "dpo_loss": mean(terms.dpo), "fm_loss": mean(terms.regulariser),
            "reward_accuracy": mean(terms.logit > 0), "logit": mean(terms.logit),
            "winner_vs_ref": mean(e_w - r_w), "loser_vs_ref": mean(e_l - r_l),
            "grad_norm": grad_norm, "lr": lr, "samples": self.step * recipe.batch_size,
        }  # fmt: skip
