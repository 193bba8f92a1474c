"""`DistillTrainer`: one stage of Online LPM distillation on the training loop of `lpm.train`.

Legend: B batch, C latent channels, F latent frames of a clip, Fc per chunk, h/w latent grid.

Per generator step (stage 1 has no critic and no DMD):
  1. this rank's clips from `StageSampler`; their conditions (`ClipConditions`): text, audio,
     first-frame + global references; stages 1-2 also read the clips' teacher trajectories;
  2. the student produces clean chunks
       1 ode        teacher-forced, from the teacher's states at T0, T1, T2 (regressed to x0)
       2 offpolicy  teacher-forced, from the teacher's clean clip re-noised to a random T_k
       3 onpolicy   `rollout`: the backbone streams its own chunks (noisy-history cache)
       4 refiner    `rollout`: the frozen backbone streams, the refiner refines every chunk
  3. loss: ODE regression (1), or DMD against the guided teacher with the critic as fake score
     (2-4), plus ``perceptual_weight`` times the perceptual loss to the teacher's clip (2);
  4. backward, clip, AdamW, LR schedule, EMA of the student;
  5. (2-4) ``critic_updates`` flow-matching updates of the critic on the detached clip.

Checkpoints use `lpm.train.checkpoint` (atomic, optimiser, EMA, RNG, sampler): the student in
``<run>/checkpoints/``, the critic in ``<run>/critic/checkpoints/`` (written first, so every
complete student checkpoint has its critic). Random draws are seeded by (seed, step, rank), so a
resumed run repeats an unbroken one exactly.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from pathlib import Path
from typing import Any

import torch

from lpm.diffusion import renoise
from lpm.distill.conditions import ClipConditions, clip_conditions, clip_velocity, guided_teacher
from lpm.distill.dmd import critic_loss, dmd_loss, draw_noise, optimizer_step
from lpm.distill.models import freeze, init_from, load_teacher, teacher_config
from lpm.distill.perceptual import build_perceptual
from lpm.distill.recipes import DistillRecipe, online_config
from lpm.distill.rollout import rollout, teacher_forced
from lpm.distill.trajectories import TrajectoryCache
from lpm.models.dit.model import LPMTransformer
from lpm.parallel import DistInfo, all_reduce_mean, parallelize, sharded_from_rank0
from lpm.train.batch import Dataset, StageSampler, SyntheticDataset, TrainSample, collate, mix_seed
from lpm.train.checkpoint import (
    TrainerState,
    checkpoint_dir,
    load_checkpoint,
    save_checkpoint,
)
from lpm.train.determinism import seed_everything, set_deterministic
from lpm.train.ema import EMA
from lpm.train.metrics import MetricsLog, plot_metrics
from lpm.train.recipes import CATEGORIES
from lpm.train.schedule import build_optimizer
from lpm.train.trainer import StepLoop, check_dataset_fits

log = logging.getLogger(__name__)


def build_dataset(recipe: DistillRecipe) -> Dataset:
    """The clips that supply conditions and references."""
    if recipe.data == "synthetic":
        return SyntheticDataset(
            recipe.model_config(), size=recipe.dataset_size, latent_shape=recipe.latent_shape(),
            seed=recipe.seed,
        )  # fmt: skip
    if not recipe.data_path:
        raise ValueError("data='cache' needs data_path (--set data_path=DIR)")
    from lpm.train.cache import CachedDataset

    return CachedDataset(recipe.data_path, frames=recipe.latent_shape()[0], seed=recipe.seed)


class _Prefix:
    """The first ``n`` clips of a dataset (those with cached trajectories)."""

    def __init__(self, dataset: Dataset, n: int) -> None:
        self.dataset, self.n = dataset, n

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, index: int) -> TrainSample:
        return self.dataset[index]

    def category(self, index: int) -> str:
        return self.dataset.category(index)


def critic_recipe(recipe: DistillRecipe) -> DistillRecipe:
    """The recipe `build_optimizer` sees for the critic: its LR, and as many scheduler steps as
    critic updates."""
    k = recipe.critic_updates
    return dataclasses.replace(
        recipe, lr=recipe.critic_lr, warmup_steps=recipe.warmup_steps * k,
        stage_steps=tuple(s * k for s in recipe.stage_steps),
    )  # fmt: skip


class DistillTrainer(StepLoop):
    """Owns the teacher, the student, the critic and the run directory of one stage."""

    def __init__(
        self, recipe: DistillRecipe, run_dir: str | Path, *, dist_info: DistInfo,
        resume: bool = False, dataset: Dataset | None = None, progress: bool = True,
    ) -> None:  # fmt: skip
        self.recipe, self.dist, self.progress = recipe, dist_info, progress
        self.run_dir = Path(run_dir)
        set_deterministic(recipe.deterministic)
        seed_everything(recipe.seed)
        self.device = device = dist_info.device
        self.bf16 = device.type == "cuda" and recipe.mixed_precision == "bf16"
        self.schedule = recipe.schedule()
        recipe.require_teacher()
        self.dataset = dataset if dataset is not None else build_dataset(recipe)
        check_dataset_fits(self.dataset, teacher_config(recipe), recipe)
        if dist_info.world_size > 1:
            self._build_sharded()
        else:
            self.teacher = load_teacher(
                recipe.teacher, recipe.model_config(), seed=recipe.seed, device=device
            )
            # A teacher checkpoint's own architecture (e.g. ordered speak tokens) is
            # authoritative: the students and the critic start from its weights. The recipe's
            # overrides (the streaming cache layout) still apply to the students.
            self.cfg = online_config(self.teacher.cfg.replace(**recipe.model_overrides))
            self.model = self._parallel(init_from(self.cfg, self.teacher, recipe.init, device))
            self.backbone = None
            if recipe.stage == 4:
                self.backbone = freeze(init_from(self.cfg, self.teacher, recipe.backbone, device))
            self.critic = None
            if recipe.stage >= 2:
                self.critic = self._parallel(init_from(self.teacher.cfg, self.teacher, "", device))
        self.teacher_cfg = self.teacher.cfg
        self.optimizer, self.scheduler = build_optimizer(self.model, recipe)
        self.ema = EMA(self.model, recipe.ema_decay) if recipe.ema_decay > 0 else None
        if self.critic is not None:
            self.critic_optimizer, self.critic_scheduler = build_optimizer(
                self.critic, critic_recipe(recipe)
            )
        self.perceptual = None
        if recipe.stage == 2 and recipe.perceptual_weight > 0:
            self.perceptual = build_perceptual(recipe, self.teacher, device)
        self.trajectories = None
        pool: Dataset = self.dataset
        if recipe.stage in (1, 2):
            if not recipe.trajectories:
                raise ValueError(
                    f"stage {recipe.stage} needs teacher trajectories: run `lpm distill "
                    "trajectories --recipe NAME --out DIR` and pass --set trajectories=DIR"
                )
            self.trajectories = TrajectoryCache(recipe.trajectories, recipe)
            pool = _Prefix(self.dataset, len(self.trajectories))
        self.sampler = StageSampler(
            pool, [CATEGORIES], global_batch=recipe.batch_size, rank=dist_info.rank,
            world_size=dist_info.world_size, seed=recipe.seed,
        )  # fmt: skip
        self.metrics = MetricsLog(self.run_dir)
        self.step = 0
        self._prepare_run_dir(resume)

    def _build_sharded(self) -> None:
        """Teacher, student, frozen backbone and critic under FSDP2, every one sharded.

        Only rank 0 reads or builds whole weights (in host memory: the teacher, and the student's
        start); every rank builds each model on the meta device, shards it, allocates its own
        shards and receives their values from rank 0. A rank then holds an eighth of each model
        on 8 GPUs instead of the teacher, student and critic whole (lpm-17b: 70 GB each in fp32).
        """
        recipe, main = self.recipe, self.dist.is_main
        teacher_cfg = teacher_config(recipe)
        if recipe.teacher and teacher_cfg.attention != "bidirectional":
            raise ValueError(
                f"teacher {recipe.teacher} has attention={teacher_cfg.attention!r}; the teacher "
                "must be a bidirectional Base LPM checkpoint"
            )
        teacher_cfg = teacher_cfg.replace(attention="bidirectional")
        self.cfg = online_config(teacher_cfg.replace(**recipe.model_overrides))
        cpu = torch.device("cpu")
        teacher: list[LPMTransformer] = []  # rank 0 only, read once

        def whole_state(cfg, source: str):
            def read() -> dict[str, torch.Tensor]:
                if not teacher:
                    teacher.append(load_teacher(recipe.teacher, recipe.model_config(),
                                                seed=recipe.seed, device=cpu))  # fmt: skip
                return init_from(cfg, teacher[0], source, cpu).state_dict()

            return read

        def place(cfg, source: str, *, trainable: bool) -> torch.nn.Module:
            model = sharded_from_rank0(
                lambda: LPMTransformer(cfg), whole_state(cfg, source), device=self.device,
                is_main=main, prepare=lambda m: None if trainable else freeze(m),
                compile=recipe.compile,
                activation_checkpointing=recipe.activation_checkpointing and trainable,
                mixed_precision="bf16" if self.bf16 else None,
            )  # fmt: skip
            return model.train() if trainable else freeze(model)

        self.model = place(self.cfg, recipe.init, trainable=True)
        self.backbone = (
            place(self.cfg, recipe.backbone, trainable=False) if recipe.stage == 4 else None
        )
        self.critic = place(teacher_cfg, "", trainable=True) if recipe.stage >= 2 else None
        self.teacher = place(teacher_cfg, "", trainable=False)

    def _parallel(self, model: torch.nn.Module) -> torch.nn.Module:
        r = self.recipe
        return parallelize(
            model, fsdp=self.dist.world_size > 1,
            activation_checkpointing=r.activation_checkpointing, compile=r.compile,
            mixed_precision="bf16" if self.bf16 else None,
        )  # fmt: skip

    # ---- run directory ---------------------------------------------------------------------
    def run_info(self) -> dict[str, Any]:
        return {"stage": self.recipe.stage, "stage_name": self.recipe.stage_name,
                "teacher_config": self.teacher.cfg.to_dict()}  # fmt: skip

    def restore_extra(self) -> None:
        if self.critic is None:
            return
        critic_dir = checkpoint_dir(self.run_dir / "critic", self.step)
        if not (critic_dir / "trainer.json").is_file():
            raise ValueError(f"no critic checkpoint at {critic_dir} to resume step {self.step}")
        critic_state = load_checkpoint(
            critic_dir, model=self.critic, optimizer=self.critic_optimizer, ema=None,
            dist_info=self.dist,
        )  # fmt: skip
        self.critic_scheduler.load_state_dict(critic_state.scheduler)

    def save(self, *, plot: bool = True) -> Path:
        """Checkpoint critic then student (collective); redraw the plots if ``plot``."""
        keep = self.recipe.keep_checkpoints
        if self.critic is not None:
            state = TrainerState(
                step=self.step, sampler={}, scheduler=self.critic_scheduler.state_dict(),
                ema_updates=0, world_size=self.dist.world_size,
            )  # fmt: skip
            save_checkpoint(
                self.run_dir / "critic", step=self.step, cfg=self.teacher.cfg, model=self.critic,
                optimizer=self.critic_optimizer, ema=None, state=state, dist_info=self.dist,
                keep=keep + 1 if keep else 0,
            )  # fmt: skip
        state = TrainerState(
            step=self.step, sampler=self.sampler.state_dict(),
            scheduler=self.scheduler.state_dict(),
            ema_updates=self.ema.updates if self.ema is not None else 0,
            world_size=self.dist.world_size,
        )  # fmt: skip
        path = save_checkpoint(
            self.run_dir, step=self.step, cfg=self.cfg, model=self.model, optimizer=self.optimizer,
            ema=self.ema, state=state, dist_info=self.dist, keep=keep,
        )  # fmt: skip
        if self.dist.is_main and plot:
            plot_metrics(self.run_dir, self.metrics.read())
        return path

    # ---- one step ----------------------------------------------------------------------------
    def _autocast(self):
        if self.bf16:
            return torch.autocast("cuda", dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _generator(self, tag: int) -> torch.Generator:
        """A generator seeded by (seed, step, rank, tag): resumable, independent per purpose."""
        seed = mix_seed(self.recipe.seed, self.step, self.dist.rank, tag)
        return torch.Generator().manual_seed(seed)

    def train_step(self) -> dict[str, Any]:
        """Generator step ``self.step`` (+ critic updates); returns its metrics."""
        recipe = self.recipe
        indices = self.sampler.next_indices(0)
        batch = collate([self.dataset[i] for i in indices]).to(self.device)
        clip = clip_conditions(batch)
        states = None
        if self.trajectories is not None:
            states = torch.stack([self.trajectories.states(i) for i in indices]).to(self.device)
        self.model.train()
        with self._autocast():
            x0, loss, extra = self._generator_loss(clip, states)
        grad_norm = optimizer_step(
            self.model, loss, self.optimizer, self.scheduler, recipe.grad_clip
        )
        lr = self.scheduler.get_last_lr()[0]
        if self.ema is not None:
            self.ema.update(self.model)
        if self.critic is not None:
            extra["critic_loss"] = self._critic_updates(clip, x0.detach())
        self.step += 1
        record = {
            "step": self.step, "stage": recipe.stage_name,
            "loss": float(all_reduce_mean(loss.detach())), "grad_norm": grad_norm, "lr": lr,
            "samples": self.step * recipe.batch_size,
        }  # fmt: skip
        record.update({k: float(v) for k, v in extra.items()})
        return record

    def _generator_loss(
        self, clip: ClipConditions, states: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor, dict[str, float]]:
        """(student clip (B, C, F, h, w), loss, diagnostics) of this step's stage."""
        stage = self.recipe.stage
        if stage == 1:
            return self._ode_loss(clip, states)
        if stage == 2:
            x0, target = self._offpolicy_sample(clip, states)
        else:
            x0, target = self._onpolicy_sample(clip), None
        loss, extra = self._dmd(clip, x0)
        extra["dmd"] = float(loss.detach())
        if self.perceptual is not None and target is not None:
            perceptual = self.perceptual(x0, target)
            extra["perceptual"] = float(perceptual.detach())
            loss = loss + self.recipe.perceptual_weight * perceptual
        return x0, loss, extra

    def _chunks(self, x: torch.Tensor) -> list[torch.Tensor]:
        return list(x.split(self.cfg.latents_per_chunk, dim=2))

    def _ode_loss(self, clip: ClipConditions, states: torch.Tensor):
        """ODE regression: each recorded level but 0, teacher-forced, mapped to the teacher's x0."""
        sigmas = self.recipe.trajectory_sigmas()
        target = states[:, -1]
        n = self.recipe.chunks
        conds, history = clip.chunks(n, self.cfg), self._chunks(target)
        g = self._generator(1)
        losses, extra, pred = [], {}, target
        for level, sigma in enumerate(sigmas[:-1]):
            preds = teacher_forced(
                self.model, clip.references, conds, self._chunks(states[:, level]), [sigma] * n,
                history, history_sigma=self.schedule.history_sigma, generator=g,
            )  # fmt: skip
            pred = torch.cat(preds, dim=2)
            losses.append((pred.float() - target.float()).square().mean())
            extra[f"ode_t{round(1000 * sigma)}"] = float(losses[-1].detach())
        return pred.detach(), torch.stack(losses).mean(), extra

    def _offpolicy_sample(self, clip: ClipConditions, states: torch.Tensor):
        """Student chunks from the teacher's clean clip re-noised to a random backbone level."""
        g = self._generator(2)
        timesteps = self.schedule.backbone_timesteps
        k = int(torch.randint(len(timesteps), (1,), generator=g))
        sigma = timesteps[k] / 1000.0
        target = states[:, -1]
        n = self.recipe.chunks
        inputs = [renoise(c, sigma, g) for c in self._chunks(target)]
        preds = teacher_forced(
            self.model, clip.references, clip.chunks(n, self.cfg), inputs, [sigma] * n,
            self._chunks(target), history_sigma=self.schedule.history_sigma, generator=g,
        )  # fmt: skip
        return torch.cat(preds, dim=2), target

    def _onpolicy_sample(self, clip: ClipConditions) -> torch.Tensor:
        """A rollout through the streaming chunk step (stage 3: backbone; 4: refiner)."""
        n, fc = self.recipe.chunks, self.cfg.latents_per_chunk
        shape = (clip.batch, self.cfg.out_channels, fc, *self.recipe.latent_hw)
        seed = mix_seed(self.recipe.seed, self.step, self.dist.rank, 3)
        conds = clip.chunks(n, self.cfg)
        if self.recipe.stage == 3:
            last = len(self.schedule.backbone_timesteps) - 1
            grad_steps = None if self.recipe.grad_steps == "all" else (last,)
            out = rollout(self.model, None, clip.references, self.schedule, conds, shape,
                          self.device, seed=seed, backbone_grad_steps=grad_steps)  # fmt: skip
            return out.video("backbone")
        out = rollout(self.backbone, self.model, clip.references, self.schedule, conds, shape,
                      self.device, seed=seed, backbone_grad_steps=())  # fmt: skip
        return out.video("refined")

    def _dmd(self, clip: ClipConditions, x0: torch.Tensor) -> tuple[torch.Tensor, dict]:
        r = self.recipe
        real = guided_teacher(
            self.teacher, clip, text_scale=r.text_scale, audio_scale=r.audio_scale,
            cue_scale=r.cue_scale, cue_min_sigma=r.cue_min_sigma,
        )  # fmt: skip
        self.critic.eval()
        fake = lambda x, s: clip_velocity(self.critic, x, s, clip)  # noqa: E731
        draw = draw_noise(x0, self._generator(4), sigma_range=r.dmd_sigma_range, shift=r.shift)
        return dmd_loss(x0, real, fake, draw)

    def _critic_updates(self, clip: ClipConditions, x0: torch.Tensor) -> float:
        """``critic_updates`` flow-matching steps of the critic on the detached clip; last loss."""
        r, g = self.recipe, self._generator(5)
        self.critic.train()
        loss = torch.zeros((), device=x0.device)
        for _ in range(r.critic_updates):
            draw = draw_noise(x0, g, sigma_range=r.dmd_sigma_range, shift=r.shift)
            with self._autocast():
                loss = critic_loss(lambda x, s: clip_velocity(self.critic, x, s, clip), x0, draw)
            optimizer_step(
                self.critic, loss, self.critic_optimizer, self.critic_scheduler, r.grad_clip
            )
        return float(all_reduce_mean(loss.detach()))
