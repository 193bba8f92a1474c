"""The flow-matching trainer for Base LPM.

One optimiser step (see `Trainer.train_step`):
  1. sample this rank's slice of the global batch (`StageSampler`), collate, move to device;
  2. build the problem (`build_problem`): per-sample noise level with Wan's shift, noise,
     clean context frames, condition dropout, references for the curriculum stage;
  3. predict the velocity (bf16 autocast on CUDA only) and take the fp32 MSE to ``eps - x0``
     over target frames, averaged per sample then over the batch;
  4. backward, clip the global gradient norm, AdamW, LR schedule, EMA.

The run directory holds ``recipe.json`` and ``run.json`` (git revision, world size, device),
``metrics.jsonl``, ``loss.png`` / ``lr.png`` and ``checkpoints/``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lpm.diffusion import flow_matching_loss
from lpm.models.dit.model import LPMTransformer
from lpm.parallel import (
    DistInfo,
    all_reduce_mean,
    barrier,
    full_tensor,
    parallelize,
    sharded_from_rank0,
)
from lpm.train.batch import (
    Dataset,
    StageSampler,
    SyntheticDataset,
    action_repeats,
    collate,
)
from lpm.train.checkpoint import TrainerState, latest_checkpoint, load_checkpoint, save_checkpoint
from lpm.train.conditioning import build_problem
from lpm.train.determinism import seed_everything, set_deterministic
from lpm.train.ema import EMA
from lpm.train.metrics import DEFAULT_SERIES, MetricsLog, git_revision, plot_metrics
from lpm.train.recipes import TrainRecipe
from lpm.train.schedule import build_optimizer

log = logging.getLogger(__name__)


@dataclass(kw_only=True)
class TrainResult:
    """Summary of a finished `Trainer.fit`."""

    steps: int
    """Optimiser steps completed in total (including those before a resume)."""
    final_loss: float
    """Loss of the last step."""
    steps_per_s: float
    """Optimiser steps per second over this process's run (excluding set-up)."""
    checkpoint: Path | None
    """The final checkpoint."""


def build_dataset(recipe: TrainRecipe) -> Dataset:
    """The recipe's data source."""
    if recipe.data == "synthetic":
        return SyntheticDataset(
            recipe.model_config(), size=recipe.dataset_size, latent_shape=recipe.latent_shape,
            seed=recipe.seed,
        )  # fmt: skip
    if recipe.data == "cache":
        if not recipe.data_path:
            raise ValueError("data='cache' needs data_path (--set data_path=DIR)")
        from lpm.train.cache import CachedDataset

        return CachedDataset(
            recipe.data_path, frames=recipe.latent_shape[0], seed=recipe.seed,
            cue_actions=recipe.cue_action_weight > 0,
            mirror_skip_actions=recipe.mirror_skip_actions,
        )  # fmt: skip
    raise ValueError(f"data={recipe.data!r} has no loader")


def check_dataset_fits(dataset: Dataset, cfg, recipe: TrainRecipe) -> None:
    """ValueError naming every feature of the dataset's first sample that the model cannot
    read (a cache encoded with another scale's encoders, say)."""
    sample = dataset[0]
    wanted = {
        "latent channels": (sample.latents.shape[0], cfg.in_channels),
        "text feature width": (sample.text.shape[-1], cfg.text_dim),
        "speak-audio feature width": (sample.speak_audio.shape[-1], cfg.audio_dim),
        "listen-audio feature width": (sample.listen_audio.shape[-1], cfg.audio_dim),
    }
    _, h, w = sample.latents.shape[1:]
    _, ph, pw = cfg.patch_size
    bad = [f"{name} {got} (the model reads {want})"
           for name, (got, want) in wanted.items() if got != want]  # fmt: skip
    if h % ph or w % pw:
        bad.append(f"latent grid {h}x{w} (not divisible by the patch {ph}x{pw})")
    if bad:
        where = recipe.data_path or recipe.data
        raise ValueError(
            f"the data at {where} does not fit {cfg.name}: " + "; ".join(bad) + ". Encode it "
            "with a bundle of this scale's encoders (`lpm data encode --model DIR`)"
        )


CUE_ACTION_SERIES = ("cue_action_loss", "cue-action loss", "cue_action_loss.png", True)


def action_balance(dataset: Dataset, recipe: TrainRecipe) -> list[int]:
    """Per-sample repeats that balance the labelled actions (`TrainRecipe.balance_actions`)."""
    if not hasattr(dataset, "actions"):
        raise ValueError(
            f"balance_actions needs a dataset with action labels (data='cache' of Stage clips); "
            f"{type(dataset).__name__} has none"
        )
    return action_repeats(
        [dataset.actions(i) for i in range(len(dataset))],
        most=recipe.balance_max_repeats,
        weights=recipe.action_weights,
    )


#: Recipe fields a resumed run may change: how long it trains, and how, not what it learns.
RESUMABLE_CHANGES = frozenset({
    "steps", "checkpoint_every", "keep_checkpoints", "log_every", "micro_batch_size",
    "mixed_precision", "activation_checkpointing", "compile",
})  # fmt: skip


def _changed_fields(saved_path: Path, asked_json: str) -> list[str]:
    """``field: saved -> asked`` for each recipe field a resume may not change."""
    if not saved_path.is_file():
        return []
    saved, asked = _flatten(json.loads(saved_path.read_text())), _flatten(json.loads(asked_json))
    return [
        f"{key}: {saved[key]!r} -> {asked[key]!r}"
        for key in sorted(saved.keys() & asked.keys())  # a field newer than the run is skipped
        if saved[key] != asked[key] and key.rsplit(".", 1)[-1] not in RESUMABLE_CHANGES
    ]


def _flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    """Dotted paths to the leaves of a recipe's JSON (list items of a named stage by name)."""
    if isinstance(value, dict):
        items = value.items()
    elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        items = ((str(v.get("name", i)), v) for i, v in enumerate(value))
    else:
        return {prefix: value}
    out: dict[str, Any] = {}
    for key, child in items:
        out.update(_flatten(child, f"{prefix}.{key}" if prefix else str(key)))
    return out


class StepLoop:
    """The training loop shared by `Trainer` and the distillation trainer.

    A subclass sets ``recipe`` (``name``, ``total_steps``, ``log_every``, ``checkpoint_every``),
    ``dist``, ``progress``, ``run_dir``, ``metrics`` and ``step``, and implements `train_step`
    (one optimiser step, returning its metrics record with ``loss`` and ``stage``); `save`
    checkpoints ``model``, ``optimizer``, ``ema``, ``scheduler`` and ``sampler`` unless
    overridden.
    """

    recipe: Any
    dist: DistInfo
    progress: bool
    run_dir: Path
    metrics: MetricsLog
    step: int

    #: Plots are redrawn with a checkpoint at most this often (seconds), and always at the end.
    plot_interval_s = 60.0
    #: The metrics plotted by `save` (`lpm.train.metrics.plot_metrics`).
    plot_series = DEFAULT_SERIES

    def train_step(self) -> dict[str, Any]:
        raise NotImplementedError

    def save(self, *, plot: bool = True) -> Path:
        """Checkpoint the current step (collective); redraw the plots if ``plot``.

        Saves ``model`` (its config ``cfg``), ``optimizer``, ``ema``, ``scheduler`` and
        ``sampler``; a loop with more state overrides this.
        """
        state = TrainerState(
            step=self.step, sampler=self.sampler.state_dict(),
            scheduler=self.scheduler.state_dict(),
            ema_updates=self.ema.updates if self.ema is not None else 0,
            world_size=self.dist.world_size,
        )  # fmt: skip
        path = save_checkpoint(
            self.run_dir, step=self.step, cfg=self.cfg, model=self.model, optimizer=self.optimizer,
            ema=self.ema, state=state, dist_info=self.dist, keep=self.recipe.keep_checkpoints,
        )  # fmt: skip
        if self.dist.is_main and plot:
            plot_metrics(self.run_dir, self.metrics.read(), series=self.plot_series)
        return path

    def _autocast(self):
        """bf16 autocast when ``bf16`` is set (CUDA), else nothing."""
        if self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def run_info(self) -> dict[str, Any]:
        """Extra fields written into run.json."""
        return {}

    def restore_extra(self) -> None:
        """Restore state beyond model/optimizer/EMA/scheduler/sampler after a resume."""

    def _prepare_run_dir(self, resume: bool) -> None:
        """Write recipe.json + run.json, or resume from the latest complete checkpoint.

        A resumed run keeps its recipe: only step counts and settings that do not change what
        is learnt (checkpoint and log intervals, micro-batches, precision, activation
        checkpointing, compilation) may differ from the saved ``recipe.json``.
        """
        existing = latest_checkpoint(self.run_dir)
        if existing is not None and not resume:
            raise ValueError(
                f"{self.run_dir} already holds checkpoints (latest {existing.name}); pass --resume "
                "to continue it or choose another --out"
            )
        if existing is not None:
            changed = _changed_fields(self.run_dir / "recipe.json", self.recipe.to_json())
            if changed:
                raise ValueError(
                    f"{self.run_dir} was trained with another recipe, so it cannot be resumed "
                    f"with this one: {'; '.join(changed)}. Resume with the run's own --recipe "
                    "and --set values (its recipe.json), or start a new run with another --out"
                )
        elif resume:
            log.info("no checkpoint in %s yet: starting at step 0", self.run_dir)
        if self.dist.is_main:
            self.run_dir.mkdir(parents=True, exist_ok=True)
            (self.run_dir / "recipe.json").write_text(self.recipe.to_json())
            run = {
                "git_revision": git_revision(), "world_size": self.dist.world_size,
                "device": str(self.device), "torch": torch.__version__,
                "model_config": self.cfg.to_dict(), **self.run_info(),
                "resumed_from": existing.name if existing else None,
            }  # fmt: skip
            (self.run_dir / "run.json").write_text(json.dumps(run, indent=2, sort_keys=True))
        barrier()
        if existing is None:
            if self.dist.is_main and self.metrics.path.exists():
                self.metrics.path.unlink()
            return
        state = load_checkpoint(existing, model=self.model, optimizer=self.optimizer, ema=self.ema,
                                dist_info=self.dist)  # fmt: skip
        self.scheduler.load_state_dict(state.scheduler)
        self.sampler.load_state_dict(state.sampler)
        self.step = state.step
        self.restore_extra()
        if self.dist.is_main:
            self.metrics.truncate(self.step)
        log.info("resumed from %s at step %d", existing, self.step)
        barrier()

    def fit(self) -> TrainResult:
        """Train until the recipe's last step, logging and checkpointing on the way."""
        recipe, total = self.recipe, self.recipe.total_steps
        bar = None
        if self.dist.is_main and self.progress:
            from tqdm.auto import tqdm

            bar = tqdm(
                total=total, initial=self.step, desc=recipe.name, unit="step", dynamic_ncols=True
            )
        start, start_step, record, path = time.perf_counter(), self.step, None, None
        last_plot = start
        try:
            while self.step < total:
                record = self.train_step()
                elapsed = time.perf_counter() - start
                record["elapsed_s"] = elapsed
                record["steps_per_s"] = (self.step - start_step) / max(elapsed, 1e-9)
                last = self.step == total
                if self.dist.is_main and (self.step % recipe.log_every == 0 or last):
                    self.metrics.append(record)
                    if bar is not None:
                        bar.set_postfix(stage=record["stage"], loss=f"{record['loss']:.4f}")
                if bar is not None:
                    bar.update(1)
                ckpt_due = recipe.checkpoint_every and self.step % recipe.checkpoint_every == 0
                if ckpt_due or last:
                    plot = last or time.perf_counter() - last_plot > self.plot_interval_s
                    path = self.save(plot=plot)
                    last_plot = time.perf_counter() if plot else last_plot
        finally:
            if bar is not None:
                bar.close()
        elapsed = time.perf_counter() - start
        if record is None:  # a finished run resumed: its last logged loss
            log.info("%s is at step %d of %d: nothing to train", self.run_dir, self.step, total)
            past = self.metrics.read() if self.metrics.path.exists() else []
            record = past[-1] if past else {"loss": float("nan")}
        return TrainResult(
            steps=self.step, final_loss=record["loss"],
            steps_per_s=(self.step - start_step) / max(elapsed, 1e-9),
            checkpoint=path or latest_checkpoint(self.run_dir),
        )  # fmt: skip


def _load_init(model: LPMTransformer, init: str) -> None:
    """Copy the weights of ``init`` (bundle, checkpoint or run directory) into ``model``."""
    from lpm.distill.models import resolve_checkpoint
    from lpm.models.dit.checkpoint import load_lpm_checkpoint
    from lpm.models.dit.state_dict_adapter import is_fresh

    source = load_lpm_checkpoint(resolve_checkpoint(init), dtype=torch.float32)
    state = source.state_dict()
    if (source.cfg.in_channels, source.cfg.out_channels) != (model.cfg.in_channels,
                                                              model.cfg.out_channels):  # fmt: skip
        state = widen_latent_channels(state, source.cfg, model.cfg)
        log.info("latent channels widened %d -> %d (the new ones start unread and predicted 0)",
                 source.cfg.in_channels, model.cfg.in_channels)  # fmt: skip
    try:
        missing, unexpected = model.load_state_dict(state, strict=False)
        if unexpected:
            raise RuntimeError(f"unexpected keys {unexpected[:4]}")
        # An audio module or cue embedding that ``init`` lacks (e.g. ordered speak tokens or
        # text cues added to a trained model) starts fresh; anything else missing means the
        # architectures differ.
        if [k for k in missing if not k.startswith(("speak_embed.", "cue_"))]:
            raise RuntimeError(f"missing keys {missing[:4]}")
    except RuntimeError as err:
        raise ValueError(f"init={init}: its weights do not fit {model.cfg.name!r}: {err}") from None
    fresh = sorted({k.split(".")[0] for k in missing if is_fresh(k)})
    note = f" ({', '.join(fresh)} fresh)" if fresh else ""
    log.info("starting from the weights of %s%s", init, note)


def widen_latent_channels(state: dict, old_cfg, new_cfg) -> dict:
    """A DiT's weights fitted to more latent channels (a VAE widened with new channels).

    The patch embedding reads the new input channels with zero weights and the head predicts
    zero for the new output channels, so the widened model computes exactly what it did on the
    old channels until training teaches it the new ones.
    """
    added_in = new_cfg.in_channels - old_cfg.in_channels
    added_out = new_cfg.out_channels - old_cfg.out_channels
    if added_in < 0 or added_out < 0 or added_in != added_out:
        raise ValueError(
            f"can only add the same number of input and output latent channels, not "
            f"{old_cfg.in_channels}/{old_cfg.out_channels} -> "
            f"{new_cfg.in_channels}/{new_cfg.out_channels}"
        )
    out = dict(state)
    w = state["patch_embed.weight"]  # (D, C, pt, ph, pw)
    out["patch_embed.weight"] = torch.cat([w, w.new_zeros(w.shape[0], added_in, *w.shape[2:])], 1)
    patch = math.prod(old_cfg.patch_size)
    for key in ("head.proj.weight", "head.proj.bias"):  # rows ordered (patch, channel)
        t = state[key].reshape(patch, old_cfg.out_channels, *state[key].shape[1:])
        pad = t.new_zeros(patch, added_out, *t.shape[2:])
        out[key] = torch.cat([t, pad], 1).reshape(patch * new_cfg.out_channels, *t.shape[2:])
    return out


def _freeze_all_but(model: LPMTransformer, pattern: str) -> None:
    """Freeze every parameter whose name does not match ``pattern`` (``re.search``)."""
    import re

    names = [n for n, p in model.named_parameters() if re.search(pattern, n)]
    if not names:
        raise ValueError(f"trainable={pattern!r} matches no parameter of {model.cfg.name!r}")
    for name, param in model.named_parameters():
        param.requires_grad_(name in names)
    log.info("training %d of %d parameter tensors (trainable=%r)", len(names),
             sum(1 for _ in model.parameters()), pattern)  # fmt: skip


class Trainer(StepLoop):
    """Owns the model, optimiser, EMA, data order and run directory of one training run."""

    def __init__(
        self, recipe: TrainRecipe, run_dir: str | Path, *, dist_info: DistInfo,
        resume: bool = False, dataset: Dataset | None = None, progress: bool = True,
    ) -> None:  # fmt: skip
        self.recipe, self.dist, self.progress = recipe, dist_info, progress
        self.run_dir = Path(run_dir)
        self.cfg = recipe.model_config()
        set_deterministic(recipe.deterministic)
        seed_everything(recipe.seed)
        self.device = dist_info.device
        self.bf16 = self.device.type == "cuda" and recipe.mixed_precision == "bf16"
        if recipe.starts_from and not recipe.init and recipe.data != "synthetic" and not resume:
            raise ValueError(
                f"recipe {recipe.name} fine-tunes {recipe.starts_from}: pass its converted "
                "weights with --set init=DIR (docs/convert.md), or --set starts_from= to train "
                f"{recipe.model} from random weights"
            )
        self.dataset = dataset if dataset is not None else build_dataset(recipe)
        check_dataset_fits(self.dataset, self.cfg, recipe)
        self.model = self._build_model(init=recipe.init if not resume else "")
        self.optimizer, self.scheduler = build_optimizer(self.model, recipe)
        self.ema = EMA(self.model, recipe.ema_decay) if recipe.ema_decay > 0 else None
        self.sampler = StageSampler(
            self.dataset, [s.categories for s in recipe.stages], global_batch=recipe.batch_size,
            rank=dist_info.rank, world_size=dist_info.world_size, seed=recipe.seed,
            repeats=action_balance(self.dataset, recipe) if recipe.balance_actions else None,
        )  # fmt: skip
        self.metrics = MetricsLog(self.run_dir)
        if recipe.cue_action_weight:
            self.plot_series = (*DEFAULT_SERIES, CUE_ACTION_SERIES)
        self.step = 0
        self._prepare_run_dir(resume)

    def _build_model(self, *, init: str) -> torch.nn.Module:
        """The model, started from ``init`` or seeded random weights, ready to train.

        On one process it is built whole on the device. Under FSDP2 only rank 0 builds the whole
        model (in host memory, seeded as one process would); every rank builds its blocks on the
        meta device, shards them, allocates only its own shards and receives their values from
        rank 0, so no rank but the first ever holds a whole copy (lpm-17b: 70 GB in fp32).
        """
        recipe, dist_info = self.recipe, self.dist
        options = dict(
            activation_checkpointing=recipe.activation_checkpointing, compile=recipe.compile,
            mixed_precision="bf16" if self.bf16 else None,
        )  # fmt: skip
        if dist_info.world_size == 1:
            model = LPMTransformer(self.cfg).to(self.device)
            if init:
                _load_init(model, init)
            if recipe.trainable:
                _freeze_all_but(model, recipe.trainable)
            return parallelize(model, fsdp=False, **options)

        def whole_state() -> dict[str, torch.Tensor]:
            whole = LPMTransformer(self.cfg)
            if init:
                _load_init(whole, init)
            return whole.state_dict()

        def prepare(model: torch.nn.Module) -> None:
            if recipe.trainable:
                _freeze_all_but(model, recipe.trainable)

        return sharded_from_rank0(
            lambda: LPMTransformer(self.cfg), whole_state, device=self.device,
            is_main=dist_info.is_main, prepare=prepare, **options,
        )  # fmt: skip

    # ---- one step ----------------------------------------------------------------------------
    def train_step(self) -> dict[str, Any]:
        """Run optimiser step ``self.step`` and return its metrics (loss averaged over ranks).

        With ``micro_batch_size`` the rank's share runs in pieces whose losses are weighted by
        their share of it, so the summed gradients are those of the whole share at once."""
        recipe, step = self.recipe, self.step
        stage_index, stage = recipe.stage_at(step)
        indices = self.sampler.next_indices(stage_index)
        size = recipe.micro_batch_size or len(indices)
        pieces = [indices[i : i + size] for i in range(0, len(indices), size)]
        self.model.train()
        self.optimizer.zero_grad(set_to_none=True)
        flow = cue = None
        for piece in pieces:
            share = len(piece) / len(indices)  # exactly 1.0 without accumulation
            piece_flow, piece_cue = self._forward_backward(piece, stage, step, share)
            flow = piece_flow if flow is None else flow + piece_flow
            if piece_cue is not None:
                cue = piece_cue if cue is None else cue + piece_cue
        max_norm = recipe.grad_clip if recipe.grad_clip > 0 else math.inf
        grad_norm = full_tensor(torch.nn.utils.clip_grad_norm_(self.model.parameters(), max_norm))
        lr = self.scheduler.get_last_lr()[0]
        self.optimizer.step()
        self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        self.step += 1
        return {
            "step": self.step, "stage": stage.name, "loss": float(all_reduce_mean(flow)),
            "grad_norm": float(grad_norm), "lr": lr,
            "samples": self.step * recipe.batch_size,
        } | ({} if not recipe.cue_action_weight else {
            "cue_action_loss": float(all_reduce_mean(
                cue if cue is not None else torch.zeros((), device=self.device)
            )),
        })  # fmt: skip

    def _forward_backward(
        self, indices: list[int], stage, step: int, share: float
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Forward and backward of the samples ``indices``, their loss weighted by ``share`` of
        the step's batch; returns the weighted (flow-matching, cue-action) losses, detached."""
        recipe = self.recipe
        batch = collate([self.dataset[i] for i in indices]).to(self.device)
        problem = build_problem(batch, recipe, stage, step)
        with self._autocast():
            v_pred = self.model(problem.x_t, problem.timestep, **problem.model_kwargs)
        per_sample = flow_matching_loss(
            v_pred, problem.x0, problem.noise, weight=problem.loss_weight,
            mask=problem.loss_mask, reduction="none",
        )  # fmt: skip
        flow = per_sample.mean() * share
        loss = flow
        cue_loss = (
            getattr(self.model, "cue_action_loss", None) if recipe.cue_action_weight else None
        )
        if cue_loss is not None:
            cue_loss = cue_loss * share
            loss = loss + recipe.cue_action_weight * cue_loss
            getattr(self.model, "_orig_mod", self.model).cue_action_loss = None  # no graph kept
        if not torch.isfinite(loss):
            raise FloatingPointError(f"non-finite loss {loss.item()} at step {step}")
        loss.backward()
        return flow.detach(), None if cue_loss is None else cue_loss.detach()
