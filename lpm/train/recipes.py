"""Typed training recipes, the Base LPM curriculum stages, a registry and ``--set`` overrides.

A recipe is everything a run needs besides where it writes: the model config, the data, the
optimiser, the noise-level sampling, condition dropout and the curriculum as an ordered tuple of
named stages (DESIGN §2):

``speak``     Every parameter is trained, but only the speak audio stream is fed (listen audio is
              absent, so odd layers' audio branches output zero and get no gradient); data is
              speaking and silence clips.
``listen``    Both streams are fed; data mixes speak, listen, silence and conversation clips.
``identity``  Every clip gets a global reference; with probability ``extra_reference_prob`` per
              step it also gets body-view and expression references.
``long``      Long-video adaptation: the global reference is always present and the clip's own
              first frame is not (in a long video the only ground truth is the reference). Each
              sample continues from ``context_frames`` (2–5) clean leading latent frames
              (timestep 0, no loss), like chunk continuation at inference; with probability
              ``context_drop_prob`` that ground-truth context is dropped, so the sample is made
              from the references, text and audio alone and the model does not learn to lean on
              a perfect context it will not have when continuing its own output.

Every stage applies classifier-free-guidance dropout to text and audio per sample.
"""

from __future__ import annotations

import dataclasses
import json
import re
import types
import typing
from dataclasses import dataclass, field
from typing import Any, Literal

from lpm.config import ModelConfig, get_model_config

DataSource = Literal["synthetic", "cache"]
TimestepSampling = Literal["logit_normal", "uniform"]
MixedPrecision = Literal["bf16", "none"]
#: Data categories a sample may carry (DESIGN §5 semantic classes, simplified).
CATEGORIES: tuple[str, ...] = ("speak", "listen", "silence", "conversation")


@dataclass(kw_only=True, frozen=True)
class StageRecipe:
    """One curriculum stage."""

    name: str
    """Stage name, e.g. ``speak``; unique within a recipe."""
    steps: int
    """Optimiser steps spent in this stage."""
    categories: tuple[str, ...] = CATEGORIES
    """Data categories sampled in this stage (a subset of ``CATEGORIES``)."""
    listen_audio: bool = True
    """Feed the listen audio stream (odd layers); False in the ``speak`` stage."""
    first_frame_reference: bool = True
    """Give the clip's first latent frame as a clean ``first_frame`` reference (image-to-video)."""
    global_reference_prob: float = 0.0
    """Probability per step that the batch gets a global appearance reference."""
    extra_reference_prob: float = 0.0
    """Probability per step (given a global reference) of body-view and expression references."""
    context_frames: tuple[int, int] = (0, 0)
    """(min, max) clean leading latent frames per sample, drawn uniformly; (0, 0) = none."""
    context_drop_prob: float = 0.0
    """Probability per sample that the ground-truth context is dropped (no clean frames)."""
    context_noise: float = 0.0
    """Largest noise level σ put on the context frames, drawn uniformly per sample (no loss on
    them either way). A continuation's context is the model's own, slightly wrong output, not
    ground truth; a little noise on it in training teaches the model not to copy its errors
    forward. Inference adds the bundle's ``context_sigma`` likewise. 0: clean context."""

    def __post_init__(self) -> None:
        if not self.name:
            raise ValueError("StageRecipe.name must not be empty")
        if self.steps < 0:
            raise ValueError(f"stage {self.name!r}: steps={self.steps} must be >= 0")
        unknown = set(self.categories) - set(CATEGORIES)
        if not self.categories or unknown:
            raise ValueError(
                f"stage {self.name!r}: categories={self.categories} must be a non-empty subset of "
                f"{CATEGORIES}"
            )
        for name in ("global_reference_prob", "extra_reference_prob", "context_drop_prob"):
            _check_prob(f"stage {self.name!r}: {name}", getattr(self, name))
        if not 0.0 <= self.context_noise < 1.0:
            raise ValueError(
                f"stage {self.name!r}: context_noise={self.context_noise} must be in [0, 1)"
            )
        lo, hi = self.context_frames
        if not 0 <= lo <= hi:
            raise ValueError(
                f"stage {self.name!r}: context_frames={self.context_frames} must be 0 <= min <= max"
            )


@dataclass(kw_only=True, frozen=True)
class TrainRecipe:
    """A full training recipe. Overridable from the command line with ``--set key=value``."""

    name: str
    """Registry name."""
    model: str = "lpm-nano"
    """Model config name (`lpm.config.MODEL_CONFIGS`)."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """ModelConfig fields replaced on top of ``model`` (``--set model.dim=64``)."""
    data: DataSource = "synthetic"
    """Data source. ``synthetic``: index-deterministic random tensors of the right shapes;
    ``cache``: an `lpm data encode` cache at ``data_path``, cropped to ``latent_shape[0]``."""
    data_path: str = ""
    """Cache directory for ``data="cache"``."""
    dataset_size: int = 1024
    """Samples in the synthetic dataset."""
    latent_shape: tuple[int, int, int] = (6, 16, 16)
    """(F, h, w) latent frames, height and width per clip (2 s at 64x64 for lpm-nano)."""
    batch_size: int = 2
    """Global batch (samples per optimiser step, summed over ranks)."""
    micro_batch_size: int = 0
    """Samples per forward and backward on each rank (gradient accumulation): a rank's share
    of ``batch_size`` runs in pieces of this many, whose gradients add up to the whole share's,
    so a step computes the same loss and update (to float rounding) in less activation memory.
    0: the whole share at once."""
    lr: float = 1e-4
    """Peak learning rate of AdamW."""
    betas: tuple[float, float] = (0.9, 0.999)
    """AdamW betas."""
    weight_decay: float = 0.01
    """AdamW decoupled weight decay."""
    warmup_steps: int = 100
    """Linear warm-up steps from 0 to ``lr``; then cosine decay to ``min_lr_ratio * lr``."""
    min_lr_ratio: float = 0.1
    """Final learning rate as a fraction of ``lr``."""
    steps: int | None = None
    """Total steps; None = the sum of the stages' steps. A smaller value stops the run early."""
    grad_clip: float = 1.0
    """Clip the global gradient norm to this value; 0 disables clipping."""
    ema_decay: float = 0.999
    """EMA decay per step; 0 disables the EMA."""
    timestep_sampling: TimestepSampling = "logit_normal"
    """How training noise levels are drawn (`lpm.diffusion.sample_training_sigmas`)."""
    shift: float = 3.0
    """Wan timestep shift applied to the drawn noise levels."""
    text_drop_prob: float = 0.1
    """Per-sample probability of dropping the text condition (classifier-free guidance)."""
    audio_drop_prob: float = 0.1
    """Per-sample probability of dropping both audio streams (classifier-free guidance)."""
    motion_weight: float = 0.0
    """Strength of the motion-weighted loss (`lpm.train.conditioning.motion_weights`): latent
    positions that change over the clip (a speaking mouth) count more; 0 weighs all equally."""
    cue_weight: float = 0.0
    """Extra loss weight of the latent frames that follow a timed text cue (an action or an
    expression): their weight is ``1 + cue_weight`` before each sample's weights are scaled
    back to mean 1. A cue is worth a small part of the loss; this makes following it pay."""
    cue_action_weight: float = 0.0
    """Weight of the cue-action loss (`ModelConfig.cue_action_classes`: a head names each
    cue's labelled action from its modulation vector; labels read from the Stage labels of a
    cache) added to the flow-matching loss; 0 leaves it out. The logged ``loss`` stays the
    flow-matching loss; ``cue_action_loss`` is logged beside it."""
    cue_lr_scale: float = 1.0
    """Learning rate of the text-cue modules (``cue_*``) as a multiple of ``lr``."""
    balance_actions: bool = False
    """Draw clips of rare labelled actions more often: each clip appears in an epoch as many
    times as the most common action outnumbers the rarest action it shows
    (`lpm.train.batch.action_repeats`; a cache of Stage clips, whose labels it reads)."""
    action_weights: dict[str, float] = field(default_factory=dict)
    """With ``balance_actions``: actions drawn this many times more often again than balance
    alone would (``--set action_weights=shake_head:2,turn_left:2``); unnamed actions weigh 1."""
    balance_max_repeats: int = 4
    """With ``balance_actions``: the most times one clip appears in an epoch."""
    mirror_skip_actions: tuple[str, ...] = ()
    """Leave out the mirrored clips (`lpm data encode --mirror`) that show any of these
    actions, e.g. ``wave``: Stage characters wave with one hand, so a mirrored wave is a motion
    their world never shows."""
    init: str = ""
    """Start from these weights instead of a random model (fine-tuning): a bundle (its
    ``transformer/``), a checkpoint or a run directory (its latest EMA weights). Their config
    must fit ``model``. A resumed run restores its own checkpoint instead."""
    starts_from: str = ""
    """What ``init`` is meant to hold, e.g. Wan2.1-T2V-1.3B converted by `lpm convert wan`: a
    run on real data (``data="cache"``) without ``init`` stops and says so. Empty: a random
    start is fine (``--set starts_from=`` to train a real scale from scratch on purpose)."""
    trainable: str = ""
    """Train only the parameters whose name matches this regular expression (``re.search``);
    the rest stay frozen (e.g. ``audio`` trains the audio path of a model started from
    ``init``). Empty: everything trains."""
    seed: int = 0
    """Seed of model init, data order and every per-sample random draw."""
    checkpoint_every: int = 500
    """Steps between checkpoints (a final one is always written); 0 = only the final one."""
    keep_checkpoints: int = 3
    """Most recent checkpoints kept on disk; 0 keeps all."""
    log_every: int = 10
    """Steps between metric records and progress-bar updates."""
    deterministic: bool = False
    """``torch.use_deterministic_algorithms(True)``: bit-reproducible runs, slower on GPU."""
    mixed_precision: MixedPrecision = "bf16"
    """``bf16`` autocast / FSDP compute on CUDA; CPU always trains in fp32."""
    activation_checkpointing: bool = False
    """Recompute block activations in backward."""
    compile: bool = False
    """``torch.compile`` each block."""
    stages: tuple[StageRecipe, ...] = ()
    """The curriculum, in order."""

    def __post_init__(self) -> None:
        get_model_config(self.model)
        self.model_config()  # validates model_overrides
        try:
            re.compile(self.trainable)
        except re.error as err:
            raise ValueError(
                f"trainable={self.trainable!r} is not a regular expression: {err}"
            ) from None
        if self.dataset_size < 1:
            raise ValueError(f"dataset_size={self.dataset_size} must be >= 1")
        if len(self.latent_shape) != 3 or min(self.latent_shape) < 1:
            raise ValueError(f"latent_shape={self.latent_shape} must be three positive integers")
        if self.batch_size < 1:
            raise ValueError(f"batch_size={self.batch_size} must be >= 1")
        if self.micro_batch_size < 0:
            raise ValueError(
                f"micro_batch_size={self.micro_batch_size} must be >= 0 (0: no accumulation)"
            )
        if not self.lr > 0:
            raise ValueError(f"lr={self.lr} must be > 0")
        if not self.cue_lr_scale > 0:
            raise ValueError(f"cue_lr_scale={self.cue_lr_scale} must be > 0")
        if len(self.betas) != 2 or not all(0 <= b < 1 for b in self.betas):
            raise ValueError(f"betas={self.betas} must be two values in [0, 1)")
        for name in ("weight_decay", "grad_clip", "warmup_steps", "checkpoint_every",
                     "keep_checkpoints", "motion_weight", "cue_weight",
                     "cue_action_weight"):  # fmt: skip
            if getattr(self, name) < 0:
                raise ValueError(f"{name}={getattr(self, name)} must be >= 0")
        if self.log_every < 1:
            raise ValueError(f"log_every={self.log_every} must be >= 1")
        if self.cue_action_weight > 0 and not self.model_config().cue_action_classes:
            raise ValueError(
                "cue_action_weight > 0 needs a model with a cue-action head: "
                "--set model.cue_action_classes=9 (the Stage actions, none included)"
            )
        if self.balance_max_repeats < 1:
            raise ValueError(f"balance_max_repeats={self.balance_max_repeats} must be >= 1")
        from lpm.data.stage.schema import ACTIONS

        unknown = sorted(set(self.mirror_skip_actions) - set(ACTIONS[1:]))
        if unknown:
            raise ValueError(
                f"mirror_skip_actions {unknown}: not Stage actions (known: {list(ACTIONS[1:])})"
            )
        bad = {a: w for a, w in self.action_weights.items() if not w > 0}
        if bad:
            raise ValueError(f"action_weights {bad}: every weight must be > 0")
        _check_prob("min_lr_ratio", self.min_lr_ratio)
        _check_prob("text_drop_prob", self.text_drop_prob)
        _check_prob("audio_drop_prob", self.audio_drop_prob)
        if not 0 <= self.ema_decay < 1:
            raise ValueError(f"ema_decay={self.ema_decay} must be in [0, 1)")
        if not self.shift > 0:
            raise ValueError(f"shift={self.shift} must be > 0")
        for name, options in (("data", DataSource), ("timestep_sampling", TimestepSampling),
                              ("mixed_precision", MixedPrecision)):  # fmt: skip
            if getattr(self, name) not in typing.get_args(options):
                raise ValueError(
                    f"{name}={getattr(self, name)!r} must be one of {typing.get_args(options)}"
                )
        if not self.stages:
            raise ValueError("stages must hold at least one StageRecipe")
        names = [s.name for s in self.stages]
        if len(set(names)) != len(names):
            raise ValueError(f"stages has duplicate names {names}")
        if self.stage_steps_total < 1:
            raise ValueError("the stages' steps sum to 0; give at least one stage steps >= 1")
        if self.steps is not None and not 1 <= self.steps <= self.stage_steps_total:
            raise ValueError(
                f"steps={self.steps} must be in [1, {self.stage_steps_total}] (the stages' total)"
            )

    @property
    def stage_steps_total(self) -> int:
        return sum(s.steps for s in self.stages)

    @property
    def total_steps(self) -> int:
        """Optimiser steps this run makes."""
        return self.steps if self.steps is not None else self.stage_steps_total

    def stage_at(self, step: int) -> tuple[int, StageRecipe]:
        """(index, stage) that the 0-based ``step`` belongs to."""
        end = 0
        for i, stage in enumerate(self.stages):
            end += stage.steps
            if step < end:
                return i, stage
        raise ValueError(f"step {step} is past the curriculum's {end} steps")

    def model_config(self) -> ModelConfig:
        """The model config with ``model_overrides`` applied."""
        base = get_model_config(self.model)
        known = {f.name for f in dataclasses.fields(ModelConfig)}
        unknown = set(self.model_overrides) - known
        if unknown:
            raise ValueError(f"model_overrides has unknown ModelConfig fields {sorted(unknown)}")
        data = {**base.to_dict(), **self.model_overrides}
        return ModelConfig.from_dict(data)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainRecipe:
        """Inverse of `to_dict` (lists become tuples)."""
        data = dict(data)
        stages = tuple(_from_mapping(StageRecipe, s) for s in data.pop("stages", ()))
        return _from_mapping(cls, {**data, "stages": stages})


def _check_prob(name: str, value: float) -> None:
    if not 0.0 <= value <= 1.0:
        raise ValueError(f"{name}={value} must be a probability in [0, 1]")


def _from_mapping(cls: type, data: dict[str, Any]):
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - known
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields {sorted(unknown)}; known: {sorted(known)}")
    fixed = {
        k: tuple(v) if _is_tuple(hints[k]) and isinstance(v, list) else v for k, v in data.items()
    }
    return cls(**fixed)


def _is_tuple(hint: Any) -> bool:
    return typing.get_origin(hint) is tuple


# ---- --set overrides --------------------------------------------------------------------------
_TRUE, _FALSE = ("1", "true", "yes", "on"), ("0", "false", "no", "off")


def parse_value(key: str, text: str, hint: Any) -> Any:
    """Parse ``text`` into the type ``hint`` of field ``key``; ValueError naming the key."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if type(None) in args and text.strip().lower() in ("none", "null", ""):
            return None
        inner = [a for a in args if a is not type(None)]
        return parse_value(key, text, inner[0])
    if origin is Literal:
        if text not in args:
            raise ValueError(f"--set {key}={text!r}: must be one of {list(args)}")
        return text
    if origin is tuple:
        parts = [p.strip() for p in text.strip("()[] ").split(",") if p.strip()]
        if args and args[-1] is not Ellipsis and len(parts) != len(args):
            raise ValueError(f"--set {key}={text!r}: expected {len(args)} comma-separated values")
        kinds = [args[0]] * len(parts) if args and args[-1] is Ellipsis else list(args)
        return tuple(parse_value(key, p, k) for p, k in zip(parts, kinds, strict=True))
    if hint is bool:
        low = text.strip().lower()
        if low in _TRUE or low in _FALSE:
            return low in _TRUE
        raise ValueError(f"--set {key}={text!r}: expected a boolean (true/false)")
    if hint in (int, float):
        try:
            return hint(text)
        except ValueError:
            raise ValueError(f"--set {key}={text!r}: expected {hint.__name__}") from None
    if hint is str:
        return text
    if hint is Any:
        return json.loads(text) if _looks_json(text) else text
    if origin is dict:
        return _parse_mapping(key, text, args)
    raise ValueError(f"--set {key}: fields of type {hint} cannot be set from the command line")


def override_fields(config, assignments: list[str], *, flag: str = "--set", exclude=()):
    """The dataclass ``config`` with ``key=value`` overrides of its own fields (not nested ones),
    each parsed to the field's type; unknown keys, keys in ``exclude`` and bad values raise
    ValueError naming the key and the command-line ``flag``."""
    hints = typing.get_type_hints(type(config))
    settable = sorted(set(hints) - set(exclude))
    changes: dict[str, Any] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"{flag} {item!r}: expected key=value")
        if key not in settable:
            raise ValueError(
                f"{flag} {key}: unknown {type(config).__name__} field; "
                f"use one of {', '.join(settable)}"
            )
        changes[key] = parse_value(key, value, hints[key])
    return dataclasses.replace(config, **changes)


def _parse_mapping(key: str, text: str, args: tuple) -> dict:
    """``name:value,name:value`` (or a JSON object) into a dict of the hinted value type."""
    if _looks_json(text) and isinstance(json.loads(text), dict):
        pairs = [(str(k), str(v)) for k, v in json.loads(text).items()]
    else:
        pairs = []
        for part in (p.strip() for p in text.split(",") if p.strip()):
            name, sep, value = part.partition(":")
            if not sep or not name.strip():
                raise ValueError(f"--set {key}={text!r}: expected name:value pairs, e.g. a:2,b:3")
            pairs.append((name.strip(), value.strip()))
    kind = args[1] if len(args) == 2 else Any
    return {name: parse_value(f"{key}.{name}", value, kind) for name, value in pairs}


def _looks_json(text: str) -> bool:
    try:
        json.loads(text)
    except json.JSONDecodeError:
        return False
    return True


def apply_overrides(recipe: TrainRecipe, assignments: list[str]) -> TrainRecipe:
    """Apply ``key=value`` overrides. Keys: a recipe field, ``model.<ModelConfig field>`` or
    ``stages.<stage name>.<StageRecipe field>``. Unknown keys and bad values raise ValueError."""
    top: dict[str, Any] = {}
    model: dict[str, Any] = dict(recipe.model_overrides)
    stages: dict[str, dict[str, Any]] = {}
    recipe_hints = typing.get_type_hints(TrainRecipe)
    model_hints = typing.get_type_hints(ModelConfig)
    stage_hints = typing.get_type_hints(StageRecipe)
    stage_names = [s.name for s in recipe.stages]
    settable = sorted(set(recipe_hints) - {"name", "stages", "model_overrides"})
    for item in assignments:
        key, sep, value = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ValueError(f"--set {item!r}: expected key=value")
        parts = key.split(".")
        if parts[0] == "model" and len(parts) == 2:
            if parts[1] not in model_hints or parts[1] == "name":
                raise ValueError(f"--set {key}: unknown ModelConfig field {parts[1]!r}")
            model[parts[1]] = parse_value(key, value, model_hints[parts[1]])
        elif parts[0] == "stages" and len(parts) == 3:
            if parts[1] not in stage_names:
                raise ValueError(f"--set {key}: no stage {parts[1]!r}; stages: {stage_names}")
            if parts[2] not in stage_hints or parts[2] == "name":
                raise ValueError(f"--set {key}: unknown stage field {parts[2]!r}")
            stages.setdefault(parts[1], {})[parts[2]] = parse_value(
                key, value, stage_hints[parts[2]]
            )
        elif len(parts) == 1 and key in settable:
            top[key] = parse_value(key, value, recipe_hints[key])
        else:
            raise ValueError(
                f"--set {key}: unknown key; use a recipe field ({', '.join(settable)}), "
                "model.<field> or stages.<stage>.<field>"
            )
    new_stages = tuple(dataclasses.replace(s, **stages.get(s.name, {})) for s in recipe.stages)
    return dataclasses.replace(recipe, **top, model_overrides=model, stages=new_stages)


# ---- registry ---------------------------------------------------------------------------------
def base_curriculum(speak: int, listen: int, identity: int, long: int) -> tuple[StageRecipe, ...]:
    """The Base LPM curriculum (DESIGN §2 a–d) with the given steps per stage."""
    return (
        StageRecipe(name="speak", steps=speak, categories=("speak", "silence"), listen_audio=False),
        StageRecipe(name="listen", steps=listen),
        StageRecipe(
            name="identity", steps=identity, global_reference_prob=1.0, extra_reference_prob=0.3
        ),
        StageRecipe(
            name="long", steps=long, first_frame_reference=False, global_reference_prob=1.0,
            extra_reference_prob=0.3, context_frames=(2, 5), context_drop_prob=0.3,
        ),
    )  # fmt: skip


def _real_scale(name: str, model: str, wan: str, *, batch: int, lr: float, every: int):
    """A real scale fine-tuning converted Wan2.1 weights on an `lpm data encode` cache of 480x832
    clips: 5-s clips (30 latent frames of 60x104 = 46,800 tokens), one clip per forward with
    activation checkpointing, bf16. The paper gives none of these numbers (ours)."""
    return TrainRecipe(
        name=name, model=model, starts_from=f"{wan} (lpm convert wan --config {model})",
        data="cache", latent_shape=(30, 60, 104), batch_size=batch, micro_batch_size=1, lr=lr,
        warmup_steps=500, ema_decay=0.9999, checkpoint_every=every, activation_checkpointing=True,
        stages=base_curriculum(8000, 8000, 4000, 4000),
    )  # fmt: skip


_TINY_MODEL = {
    "dim": 32, "num_heads": 2, "ffn_dim": 64, "num_layers": 2, "freq_dim": 32,
    "text_dim": 16, "text_len": 8, "audio_dim": 16,
}  # fmt: skip

RECIPES: dict[str, TrainRecipe] = {
    r.name: r
    for r in (
        TrainRecipe(
            name="nano-base",
            model="lpm-nano",
            data="cache",
            data_path="runs/nano-cache",
            latent_shape=(12, 8, 8),
            batch_size=8,
            lr=3e-4,
            warmup_steps=200,
            checkpoint_every=500,
            log_every=20,
            stages=base_curriculum(1200, 1200, 800, 800),
        ),
        _real_scale("base-1.3b", "lpm-1.3b", "Wan2.1-T2V-1.3B", batch=32, lr=2e-5, every=1000),
        _real_scale("base-17b", "lpm-17b", "Wan2.1-I2V-14B-480P", batch=64, lr=1e-5, every=500),
        TrainRecipe(
            name="test-tiny",
            model="lpm-nano",
            model_overrides=dict(_TINY_MODEL),
            dataset_size=64,
            latent_shape=(6, 4, 4),
            batch_size=4,
            lr=1e-3,
            warmup_steps=2,
            checkpoint_every=4,
            log_every=1,
            ema_decay=0.9,
            stages=base_curriculum(6, 6, 6, 6),
        ),
        TrainRecipe(
            name="test-speak",
            model="lpm-nano",
            model_overrides=dict(_TINY_MODEL),
            dataset_size=32,
            latent_shape=(2, 4, 4),
            batch_size=2,
            lr=1e-3,
            warmup_steps=1,
            checkpoint_every=2,
            log_every=1,
            stages=base_curriculum(4, 0, 0, 0)[:1],
        ),
    )  # fmt: skip
}


def get_recipe(name: str) -> TrainRecipe:
    """The named recipe; ValueError listing the known names otherwise."""
    try:
        return RECIPES[name]
    except KeyError:
        raise ValueError(f"unknown recipe {name!r}; choose one of {sorted(RECIPES)}") from None
