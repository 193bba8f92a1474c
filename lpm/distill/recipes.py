"""Typed distillation recipes, the registry and ``--set`` overrides.

One recipe describes all four stages of Online LPM distillation (DESIGN §3); ``stage`` picks the
one a run trains:

1. ``ode``         ODE regression of the backbone on cached teacher trajectories;
2. ``offpolicy``   DMD on re-noised teacher latents with teacher history, + w * perceptual loss;
3. ``onpolicy``    DMD on the backbone's own autoregressive rollouts (noisy-history caches);
4. ``refiner``     DMD of the refiner on backbone rollouts re-noised to T2.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from lpm.config import ModelConfig, get_model_config
from lpm.inference.chunk_step import OnlineSchedule
from lpm.train.recipes import DataSource, MixedPrecision, parse_value

STAGES: dict[int, str] = {1: "ode", 2: "offpolicy", 3: "onpolicy", 4: "refiner"}
Perceptual = Literal["latent", "lpips"]
GradSteps = Literal["last", "all"]
Solver = Literal["unipc", "euler"]


@dataclass(kw_only=True, frozen=True)
class DistillRecipe:
    """Everything a distillation run needs besides where it writes."""

    name: str
    """Registry name."""
    stage: int = 1
    """Which stage this run trains: 1 ode, 2 offpolicy, 3 onpolicy, 4 refiner."""
    model: str = "lpm-nano"
    """Teacher model config name; students use the same config with chunk-causal attention."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """ModelConfig fields replaced on top of ``model`` (``--set model.dim=64``)."""
    teacher: str = ""
    """Base LPM teacher: a bundle directory or an LPM checkpoint directory. Empty: a randomly
    initialised teacher from ``model`` and ``seed`` (tests and smoke runs only)."""
    starts_from: str = ""
    """What ``teacher`` is meant to be (e.g. a `base-1.3b` run): a run on real data
    (``data="cache"``) without ``teacher`` stops and says so. Empty: a random teacher is
    accepted (``--set starts_from=`` for a smoke run of a real scale)."""
    init: str = ""
    """Weights the trained student starts from: an LPM checkpoint or a distill run directory
    (its latest checkpoint). Empty: the teacher's weights (Base LPM init)."""
    backbone: str = ""
    """Stage 4: the distilled backbone that produces the rollouts (checkpoint or run directory).
    Empty: the teacher's weights."""
    trajectories: str = ""
    """Stages 1-2: directory written by ``lpm distill trajectories``."""
    data: DataSource = "synthetic"
    """Clips that supply conditions (text, audio) and first-frame / global references."""
    data_path: str = ""
    """Cache directory for ``data="cache"``."""
    dataset_size: int = 1024
    """Samples in the synthetic dataset."""
    chunks: int = 3
    """Chunks per training clip (a clip has ``chunks * latents_per_chunk`` latent frames)."""
    latent_hw: tuple[int, int] = (16, 16)
    """Latent grid (h, w) of a clip."""
    backbone_timesteps: tuple[float, ...] = (1000.0, 750.0)
    """T0, T1, ...: the backbone's denoising steps (model timestep units, descending)."""
    refiner_timestep: float = 500.0
    """T2: the level a backbone chunk is re-noised to before the refiner's step."""
    history_sigma: float = 0.1
    """Noise level of the backbone's history cache."""
    teacher_steps: int = 20
    """Teacher sampling steps when generating trajectories."""
    teacher_solver: Solver = "unipc"
    """Teacher ODE solver for trajectories."""
    shift: float = 3.0
    """Wan timestep shift of the teacher's sampling grid and of DMD / critic noise levels."""
    text_scale: float = 4.0
    """Teacher text guidance scale (trajectories and the real score)."""
    audio_scale: float = 4.0
    """Teacher audio guidance scale on top of text."""
    cue_scale: float = 0.0
    """Teacher guidance scale of the timed cues, a level between text and audio (0: the cues
    ride with the text), as Base's ``sampling.cue_scale``."""
    cue_min_sigma: float = 0.0
    """Teacher cue guidance only at noise levels σ ≥ this, as Base's ``sampling.cue_min_sigma``."""
    batch_size: int = 2
    """Global batch (clips per generator step, summed over ranks)."""
    lr: float = 2e-6
    """Peak learning rate of the student (AdamW)."""
    critic_lr: float = 4e-7
    """Peak learning rate of the fake-score critic."""
    critic_updates: int = 1
    """Critic updates per generator update (stages 2-4)."""
    betas: tuple[float, float] = (0.0, 0.999)
    """AdamW betas of student and critic."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay."""
    warmup_steps: int = 0
    """Linear warm-up steps; then cosine decay to ``min_lr_ratio * lr``."""
    min_lr_ratio: float = 1.0
    """Final learning rate as a fraction of the peak (1 = constant)."""
    stage_steps: tuple[int, int, int, int] = (2000, 1000, 2000, 1000)
    """Generator steps of stages 1-4."""
    grad_clip: float = 10.0
    """Global gradient-norm clip of student and critic; 0 disables."""
    ema_decay: float = 0.99
    """EMA of the student; 0 disables."""
    dmd_sigma_range: tuple[float, float] = (0.02, 0.98)
    """(min, max) noise level (before shift) at which real and fake scores are compared."""
    grad_steps: GradSteps = "last"
    """Stage 3: backbone denoising steps that carry gradients in the rollout."""
    perceptual: Perceptual = "latent"
    """Stage 2 perceptual loss: ``latent`` (teacher block features on latents) or ``lpips``
    (LPIPS on VAE-decoded frames; needs ``lpips_weights`` and ``decoder``)."""
    perceptual_weight: float = 0.25
    """w of the stage-2 perceptual loss."""
    lpips_weights: str = ""
    """Comma-separated weight files of the LPIPS trunk and heads (safetensors or .pth)."""
    lpips_trunk: Literal["alex", "vgg16"] = "alex"
    """LPIPS trunk network."""
    decoder: str = ""
    """A bundle directory whose VAE decodes latents for ``perceptual="lpips"``."""
    seed: int = 0
    """Seed of initialisations, data order and every random draw."""
    checkpoint_every: int = 200
    """Steps between checkpoints (a final one is always written); 0 = only the final one."""
    keep_checkpoints: int = 3
    """Most recent checkpoints kept; 0 keeps all."""
    log_every: int = 10
    """Steps between metric records."""
    deterministic: bool = False
    """``torch.use_deterministic_algorithms(True)``."""
    mixed_precision: MixedPrecision = "bf16"
    """bf16 autocast / FSDP compute on CUDA; CPU always runs fp32."""
    activation_checkpointing: bool = False
    """Recompute block activations of student and critic in backward."""
    compile: bool = False
    """``torch.compile`` each block."""

    def __post_init__(self) -> None:
        if self.stage not in STAGES:
            raise ValueError(f"stage={self.stage} must be one of {sorted(STAGES)}")
        self.model_config()  # validates model and model_overrides
        self.schedule()  # validates the timesteps
        for name in ("dataset_size", "chunks", "batch_size", "teacher_steps", "critic_updates",
                     "log_every"):  # fmt: skip
            if getattr(self, name) < 1:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 1")
        if len(self.latent_hw) != 2 or min(self.latent_hw) < 1:
            raise ValueError(f"latent_hw={self.latent_hw} must be two positive integers")
        for name in ("lr", "critic_lr", "shift"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)} must be > 0")
        for name in ("weight_decay", "grad_clip", "warmup_steps", "checkpoint_every",
                     "keep_checkpoints", "perceptual_weight"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas={self.betas} must be two values in [0, 1)")
        if not 0 <= self.min_lr_ratio <= 1:
            raise ValueError(f"min_lr_ratio={self.min_lr_ratio} must be in [0, 1]")
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay={self.ema_decay} must be in [0, 1)")
        lo, hi = self.dmd_sigma_range
        if not 0 <= lo < hi <= 1:
            raise ValueError(f"dmd_sigma_range={self.dmd_sigma_range} must be 0 <= min < max <= 1")
        if len(self.stage_steps) != 4 or min(self.stage_steps) < 1:
            raise ValueError(f"stage_steps={self.stage_steps} must be four values >= 1")
        for name, options in (("data", DataSource), ("perceptual", Perceptual),
                              ("grad_steps", GradSteps), ("teacher_solver", Solver),
                              ("mixed_precision", MixedPrecision),
                              ("lpips_trunk", Literal["alex", "vgg16"])):  # fmt: skip
            if getattr(self, name) not in typing.get_args(options):
                raise ValueError(
                    f"{name}={getattr(self, name)!r} must be one of {typing.get_args(options)}"
                )
        lpips = self.stage == 2 and self.perceptual == "lpips" and self.perceptual_weight > 0
        if lpips and (not self.lpips_weights or not self.decoder):
            raise ValueError(
                "perceptual='lpips' needs lpips_weights=FILES (LPIPS trunk + heads) and "
                "decoder=BUNDLE_DIR (a VAE to decode latents); or use perceptual=latent"
            )

    # ---- derived -------------------------------------------------------------------------------
    @property
    def stage_name(self) -> str:
        return STAGES[self.stage]

    @property
    def total_steps(self) -> int:
        """Generator steps of this run's stage."""
        return self.stage_steps[self.stage - 1]

    def require_teacher(self) -> None:
        """ValueError when a run on real data lacks the teacher the recipe is meant to distil."""
        if self.starts_from and not self.teacher and self.data != "synthetic":
            raise ValueError(
                f"recipe {self.name} distils {self.starts_from}: pass it with --set teacher=DIR "
                "(or --teacher DIR), or --set starts_from= to distil a random teacher"
            )

    def model_config(self) -> ModelConfig:
        """The teacher's (Base LPM) config with ``model_overrides`` applied."""
        base = get_model_config(self.model)
        known = {f.name for f in dataclasses.fields(ModelConfig)}
        unknown = set(self.model_overrides) - known
        if unknown:
            raise ValueError(f"model_overrides has unknown ModelConfig fields {sorted(unknown)}")
        return ModelConfig.from_dict({**base.to_dict(), **self.model_overrides})

    def student_config(self) -> ModelConfig:
        """The students' config: the teacher's with chunk-causal attention (``-online``)."""
        return online_config(self.model_config())

    def schedule(self) -> OnlineSchedule:
        return OnlineSchedule(
            backbone_timesteps=tuple(self.backbone_timesteps),
            refiner_timestep=self.refiner_timestep,
            history_sigma=self.history_sigma,
        )

    def latent_shape(self) -> tuple[int, int, int]:
        """(F, h, w) of a training clip."""
        return (self.chunks * self.model_config().latents_per_chunk, *self.latent_hw)

    def trajectory_sigmas(self) -> tuple[float, ...]:
        """The levels a teacher trajectory is recorded at: T0, T1, ..., T2 (sigma units), 0."""
        levels = sorted({*self.backbone_timesteps, self.refiner_timestep}, reverse=True)
        return (*(t / 1000.0 for t in levels), 0.0)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> DistillRecipe:
        hints = typing.get_type_hints(cls)
        fixed = {
            k: tuple(v) if typing.get_origin(hints.get(k)) is tuple and isinstance(v, list) else v
            for k, v in data.items()
        }
        return cls(**fixed)


def online_config(cfg: ModelConfig) -> ModelConfig:
    """A Base LPM config made a student's: chunk-causal attention, named ``<name>-online``."""
    name = cfg.name if cfg.name.endswith("-online") else f"{cfg.name}-online"
    return cfg.replace(name=name, attention="chunk_causal")


def apply_overrides(recipe: DistillRecipe, assignments: list[str]) -> DistillRecipe:
    """Apply ``key=value`` overrides (a recipe field or ``model.<ModelConfig field>``)."""
    hints = typing.get_type_hints(DistillRecipe)
    model_hints = typing.get_type_hints(ModelConfig)
    top: dict[str, Any] = {}
    model = dict(recipe.model_overrides)
    settable = sorted(set(hints) - {"name", "model_overrides"})
    for item in assignments:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected key=value")
        if key.startswith("model.") and key.count(".") == 1:
            sub = key.split(".")[1]
            if sub not in model_hints or sub == "name":
                raise ValueError(f"--set {key}: unknown ModelConfig field {sub!r}")
            model[sub] = parse_value(key, value, model_hints[sub])
        elif key in settable:
            top[key] = parse_value(key, value, hints[key])
        else:
            raise ValueError(
                f"--set {key}: unknown key; use a recipe field ({', '.join(settable)}) "
                "or model.<field>"
            )
    return dataclasses.replace(recipe, **top, model_overrides=model)


def _real_scale(name: str, model: str, base: str, *, batch: int) -> DistillRecipe:
    """A real scale distilled from its Base run on an `lpm data encode` cache of 480x832 clips:
    5-s clips of five 1-s chunks (6 latent frames of 60x104 each), a 40-step teacher, DMD with
    five critic updates per generator step at the learning rates of causal DMD distillations
    (2e-6 / 4e-7), activation checkpointing, bf16. Step counts are ours."""
    return DistillRecipe(
        name=name, model=model, starts_from=f"a trained {base} run or its bundle",
        data="cache", chunks=5, latent_hw=(60, 104), teacher_steps=40, shift=5.0,
        text_scale=5.0, audio_scale=4.0, batch_size=batch, lr=2e-6, critic_lr=4e-7,
        critic_updates=5, stage_steps=(3000, 1000, 2000, 1000), checkpoint_every=200,
        activation_checkpointing=True,
    )  # fmt: skip


_TINY_MODEL = {
    "dim": 32, "num_heads": 2, "ffn_dim": 64, "num_layers": 2, "freq_dim": 32,
    "text_dim": 16, "text_len": 8, "audio_dim": 16, "fps": 8, "sink_chunks": 1,
    "window_chunks": 1,
}  # fmt: skip

RECIPES: dict[str, DistillRecipe] = {
    r.name: r
    for r in (
        DistillRecipe(
            name="nano-online",
            model="lpm-nano",
            # lpm-nano saw only 2-s clips (2 chunks of positions): stream with the previous
            # chunk as the only history, exactly what chunk 1 of a training clip sees
            model_overrides=dict(sink_chunks=0, window_chunks=1),
            data="cache",
            data_path="runs/nano-cache",
            chunks=2,
            latent_hw=(8, 8),
            shift=5.0,
            history_sigma=0.3,  # held-out identity 0.803 vs 0.791 with 0.1 (docs/distill.md)
            batch_size=8,
            teacher_steps=10,
            lr=1e-4,
            critic_lr=1e-4,
            critic_updates=4,
            warmup_steps=20,
            stage_steps=(150, 100, 100, 80),
            checkpoint_every=25,
            log_every=10,
        ),  # fmt: skip
        _real_scale("online-1.3b", "lpm-1.3b", "base-1.3b", batch=8),
        _real_scale("online-17b", "lpm-17b", "base-17b", batch=32),
        DistillRecipe(
            name="test-tiny",
            model="lpm-nano",
            model_overrides=dict(_TINY_MODEL),
            dataset_size=8,
            chunks=2,
            latent_hw=(4, 4),
            teacher_steps=4,
            batch_size=2,
            lr=1e-3,
            critic_lr=1e-3,
            stage_steps=(4, 4, 4, 4),
            checkpoint_every=2,
            log_every=1,
            ema_decay=0.9,
            text_scale=2.0,
            audio_scale=2.0,
        ),  # fmt: skip
    )
}


def get_recipe(name: str) -> DistillRecipe:
    """The named recipe; ValueError listing the known names otherwise."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}") from None
