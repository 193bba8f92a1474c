"""Wan2.1 transformer weights -> `LPMTransformer`, from the original or the diffusers layout.

Legend
  D width, Fd FFN width, Cf sinusoidal timestep width, Ct text width (umT5: 4096)
  Cin input channels (T2V 16; I2V 36 = noisy latent 16 | mask 4 | first-frame latent 16)
  P = pt*ph*pw patch volume, L layers

What changes on the way in (docs/convert.md has the full table):
  * names: the original release and diffusers name the same tensors differently; the
    cross-attention LayerNorm is ``norm3`` in the original release, ``norm2`` in diffusers and ours;
  * modulation tables gain a frame axis: (1, 6, D) -> (1, 1, 6, D), head (1, 2, D) -> (1, 1, 2, D);
  * I2V's CLIP image branch (image K/V in every cross-attention and the CLIP projection) is dropped,
    and its 36-channel patch embedding keeps only the first 16 input channels, those that see the
    noisy latent: LPM gives the first frame as reference tokens instead (DESIGN §2);
  * LPM's audio modules have no Wan counterpart and keep a fresh initialisation, in which the
    audio value projection and the audio output bias are zero, so audio adds nothing at first.
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import torch

from lpm.config import MODEL_CONFIGS, ModelConfig, get_model_config
from lpm.models.dit.blocks import CrossAttention
from lpm.models.dit.checkpoint import (
    ProgressFn,
    SafetensorsSource,
    expected_shapes,
    read_json,
    write_lpm_checkpoint,
)
from lpm.models.dit.model import LPMTransformer

WanLayout = Literal["wan", "diffusers"]

#: Latent channels of the Wan2.1 VAE: the part of an I2V input that is the noisy latent.
LATENT_CHANNELS = 16
#: Input channels of Wan2.1 I2V: noisy latent (16) | mask (4) | first-frame VAE latent (16).
I2V_IN_CHANNELS = 36
#: Named configs that `auto` tries, in order.
AUTO_CANDIDATES = ("lpm-17b", "lpm-1.3b")
#: ``_class_name`` values of Wan2.1 transformers in config.json (original release, diffusers).
WAN_CLASS_NAMES = ("WanModel", "WanTransformer3DModel")
#: Prefix of single-file checkpoints exported from some UIs; stripped.
_STRIP_PREFIXES = ("model.diffusion_model.",)

# Our module -> (original release, diffusers). Each entry carries its ``.weight``/``.bias``.
_TOP_MODULES: dict[str, tuple[str, str]] = {
    "patch_embed": ("patch_embedding", "patch_embedding"),
    "time_embed.fc1": ("time_embedding.0", "condition_embedder.time_embedder.linear_1"),
    "time_embed.fc2": ("time_embedding.2", "condition_embedder.time_embedder.linear_2"),
    "time_proj": ("time_projection.1", "condition_embedder.time_proj"),
    "text_embed.fc1": ("text_embedding.0", "condition_embedder.text_embedder.linear_1"),
    "text_embed.fc2": ("text_embedding.2", "condition_embedder.text_embedder.linear_2"),
    "head.proj": ("head.head", "proj_out"),
}
_TOP_PARAMS: dict[str, tuple[str, str]] = {
    "head.modulation": ("head.modulation", "scale_shift_table")
}
_BLOCK_MODULES: dict[str, tuple[str, str]] = {
    **{f"self_attn.{n}": (f"self_attn.{n}", f"attn1.to_{n}") for n in "qkv"},
    "self_attn.o": ("self_attn.o", "attn1.to_out.0"),
    "self_attn.norm_q": ("self_attn.norm_q", "attn1.norm_q"),
    "self_attn.norm_k": ("self_attn.norm_k", "attn1.norm_k"),
    "norm2": ("norm3", "norm2"),  # the affine LayerNorm before cross-attention
    **{f"cross_attn.{n}": (f"cross_attn.{n}", f"attn2.to_{n}") for n in "qkv"},
    "cross_attn.o": ("cross_attn.o", "attn2.to_out.0"),
    "cross_attn.norm_q": ("cross_attn.norm_q", "attn2.norm_q"),
    "cross_attn.norm_k": ("cross_attn.norm_k", "attn2.norm_k"),
    "ffn.fc1": ("ffn.0", "ffn.net.0.proj"),
    "ffn.fc2": ("ffn.2", "ffn.net.2"),
}
_BLOCK_PARAMS: dict[str, tuple[str, str]] = {"modulation": ("modulation", "scale_shift_table")}
# I2V's CLIP image branch: per-block image K/V, and the CLIP feature projection.
_DROPPED_BLOCK = {
    "wan": ("cross_attn.k_img.", "cross_attn.v_img.", "cross_attn.norm_k_img."),
    "diffusers": (
        "attn2.add_k_proj.",
        "attn2.add_v_proj.",
        "attn2.norm_added_k.",
        "attn2.norm_added_q.",
    ),
}
_DROPPED_TOP = {"wan": ("img_emb.",), "diffusers": ("condition_embedder.image_embedder.",)}
_BLOCK_KEY = re.compile(r"^blocks\.(\d+)\.(.+)$")


def is_fresh(key: str) -> bool:
    """True for our audio tensors and the text-cue embedding, which have no Wan2.1 counterpart
    and keep their fresh init."""
    return key.startswith(("audio_embed.", "speak_embed.", "cue_")) or bool(
        re.match(r"^blocks\.\d+\.cross_attn\.(audio_|norm_audio_k\.)", key)
    )


def source_key(key: str, layout: WanLayout) -> str:
    """The Wan2.1 name (in ``layout``) of our non-audio state-dict key ``key``."""
    col = 0 if layout == "wan" else 1
    m = _BLOCK_KEY.match(key)
    prefix, rest = (f"blocks.{m.group(1)}.", m.group(2)) if m else ("", key)
    params, modules = (_BLOCK_PARAMS, _BLOCK_MODULES) if m else (_TOP_PARAMS, _TOP_MODULES)
    if rest in params:
        return prefix + params[rest][col]
    module, _, leaf = rest.rpartition(".")
    if module not in modules:
        raise KeyError(f"{key!r} has no Wan2.1 counterpart and is not an audio module")
    return f"{prefix}{modules[module][col]}.{leaf}"


def is_dropped(name: str, layout: WanLayout) -> bool:
    """True for a Wan2.1 tensor that LPM drops on purpose (I2V's CLIP image branch)."""
    if name.startswith(_DROPPED_TOP[layout]):
        return True
    m = _BLOCK_KEY.match(name)
    return bool(m) and m.group(2).startswith(_DROPPED_BLOCK[layout])


# ---- the source checkpoint ---------------------------------------------------------------------
@dataclass(frozen=True)
class WanGeometry:
    """What a Wan2.1 transformer checkpoint says about its shape."""

    layout: WanLayout
    dim: int
    num_layers: int
    ffn_dim: int
    freq_dim: int
    text_dim: int
    in_channels: int
    """16 (T2V) or 36 (I2V)."""
    out_channels: int
    patch_size: tuple[int, int, int]
    qk_norm: bool
    cross_attn_norm: bool
    image_branch: bool
    """True when the checkpoint has I2V's CLIP image cross-attention (dropped on conversion)."""
    num_heads: int | None
    """From config.json; None when there is none (head count is invisible in the tensors)."""
    eps: float | None
    """From config.json, when present."""


class WanCheckpoint:
    """A Wan2.1 transformer checkpoint on disk: its tensors (read lazily), layout and geometry.

    ``path`` may be the transformer directory (original release: ``diffusion_pytorch_model*``
    shards beside ``config.json``; diffusers: ``<pipeline>/transformer``), a diffusers pipeline
    directory (its ``transformer/`` is used), or a single ``.safetensors`` file.
    """

    def __init__(self, path: str | Path) -> None:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"Wan2.1 checkpoint path {path} does not exist")
        if (
            path.is_dir()
            and (path / "model_index.json").is_file()
            and (path / "transformer").is_dir()
        ):
            path = path / "transformer"
        self.path = path
        self.config = read_json(path / "config.json") if path.is_dir() else None
        _check_class(self.config, path)
        self.source = SafetensorsSource.open(path, stems=("diffusion_pytorch_model", "model"))
        self._raw: dict[str, str] = {}
        for raw in self.source.key_to_file:
            name = raw
            for prefix in _STRIP_PREFIXES:
                name = name.removeprefix(prefix)
            self._raw[name] = raw
        self.layout = detect_layout(list(self._raw), self.source.where, self.config)
        self.geometry = self._infer_geometry()

    # ---- access by normalised name ------------------------------------------------------------
    def names(self) -> list[str]:
        return list(self._raw)

    def shape(self, name: str) -> tuple[int, ...]:
        return self.source.shape(self._raw[name])

    def get(self, name: str) -> torch.Tensor:
        return self.source.get(self._raw[name])

    def dtype(self, name: str) -> torch.dtype:
        return self.source.dtype(self._raw[name])

    def file_of(self, name: str) -> Path:
        return self.source.key_to_file[self._raw[name]]

    def _require(self, name: str, what: str) -> tuple[int, ...]:
        if name not in self._raw:
            raise ValueError(
                f"{self.source.where} lacks {name!r} ({what}), which every Wan2.1 transformer in "
                f"the {self.layout} layout has; the checkpoint is incomplete or of another model"
            )
        return self.shape(name)

    def _infer_geometry(self) -> WanGeometry:
        lay, col = self.layout, (0 if self.layout == "wan" else 1)
        dim, cin, *patch = self._require("patch_embedding.weight", "(D, Cin, pt, ph, pw)")
        freq_dim = self._require(_TOP_MODULES["time_embed.fc1"][col] + ".weight", "(D, Cf)")[1]
        text_dim = self._require(_TOP_MODULES["text_embed.fc1"][col] + ".weight", "(D, Ct)")[1]
        head_out = self._require(_TOP_MODULES["head.proj"][col] + ".weight", "(Cout*P, D)")[0]
        layers = sorted({int(m.group(1)) for n in self._raw if (m := _BLOCK_KEY.match(n))})
        if not layers or layers != list(range(len(layers))):
            raise ValueError(
                f"{self.source.where} has transformer blocks {layers[:5]}...; expected blocks "
                "0..L-1 with none missing"
            )
        ffn_dim = self._require(f"blocks.0.{_BLOCK_MODULES['ffn.fc1'][col]}.weight", "(Fd, D)")[0]
        heads, eps = None, None
        if self.config is not None:
            heads = self.config.get("num_heads" if lay == "wan" else "num_attention_heads")
            eps = self.config.get("eps")
            head_dim = self.config.get("attention_head_dim")
            if lay == "diffusers" and heads and head_dim and heads * head_dim != dim:
                raise ValueError(
                    f"{self.path}/config.json says {heads} heads x {head_dim} = {heads * head_dim} "
                    f"but patch_embedding.weight is {dim} wide"
                )
        return WanGeometry(
            layout=lay,
            dim=dim,
            num_layers=len(layers),
            ffn_dim=ffn_dim,
            freq_dim=freq_dim,
            text_dim=text_dim,
            in_channels=cin,
            out_channels=head_out // math.prod(patch),
            patch_size=(patch[0], patch[1], patch[2]),
            qk_norm=f"blocks.0.{_BLOCK_MODULES['self_attn.norm_q'][col]}.weight" in self._raw,
            cross_attn_norm=f"blocks.0.{_BLOCK_MODULES['norm2'][col]}.weight" in self._raw,
            image_branch=any(is_dropped(n, lay) for n in self._raw),
            num_heads=int(heads) if heads else None,
            eps=float(eps) if eps is not None else None,
        )


def _check_class(config: dict | None, path: Path) -> None:
    if config is None:
        return
    cls = config.get("_class_name") or (config.get("architectures") or [None])[0]
    if cls is not None and cls not in WAN_CLASS_NAMES:
        raise ValueError(
            f"{path} holds a {cls}, not a Wan2.1 transformer ({' or '.join(WAN_CLASS_NAMES)}); "
            "point the source at the transformer: <diffusers pipeline>/transformer, or the "
            "original release directory with diffusion_pytorch_model*.safetensors"
        )


def detect_layout(
    names: Sequence[str], where: str = "checkpoint", config: dict | None = None
) -> WanLayout:
    """``wan`` (original release) or ``diffusers``, from tensor names; ValueError otherwise."""
    has = set(names)
    wan = "time_embedding.0.weight" in has or "blocks.0.self_attn.q.weight" in has
    diffusers = "condition_embedder.time_proj.weight" in has or "blocks.0.attn1.to_q.weight" in has
    if wan != diffusers:
        return "wan" if wan else "diffusers"
    what = "both the original and the diffusers naming" if wan else "no Wan2.1 transformer tensors"
    cls = (
        f" (config.json names {config.get('_class_name')})"
        if config and "_class_name" in config
        else ""
    )
    raise ValueError(
        f"{where}{cls} has {what}: expected e.g. 'blocks.0.self_attn.q.weight' (original release) "
        f"or 'blocks.0.attn1.to_q.weight' (diffusers); found {sorted(has)[:6]}. Is this a VAE, a "
        "text encoder or another model?"
    )


# ---- configs -------------------------------------------------------------------------------
def geometry_mismatches(geom: WanGeometry, cfg: ModelConfig) -> list[str]:
    """Human-readable differences between a Wan2.1 checkpoint and ``cfg``; empty if compatible."""
    out = []
    for field in ("dim", "num_layers", "ffn_dim", "freq_dim", "text_dim", "out_channels",
                  "patch_size", "qk_norm", "cross_attn_norm"):  # fmt: skip
        theirs, ours = getattr(geom, field), getattr(cfg, field)
        if theirs != ours:
            out.append(f"{field}: checkpoint {theirs}, config {ours}")
    if geom.num_heads is not None and geom.num_heads != cfg.num_heads:
        out.append(f"num_heads: checkpoint {geom.num_heads}, config {cfg.num_heads}")
    if geom.eps is not None and not math.isclose(geom.eps, cfg.eps, rel_tol=1e-6):
        out.append(f"eps: checkpoint {geom.eps}, config {cfg.eps}")
    reducible = geom.in_channels == I2V_IN_CHANNELS and cfg.in_channels == LATENT_CHANNELS
    if geom.in_channels != cfg.in_channels and not reducible:
        out.append(
            f"in_channels: checkpoint {geom.in_channels}, config {cfg.in_channels} (only "
            f"{I2V_IN_CHANNELS} -> {LATENT_CHANNELS} is converted)"
        )
    return out


def resolve_config(geom: WanGeometry, config: str | Path | ModelConfig = "auto") -> ModelConfig:
    """The target `ModelConfig` for a Wan2.1 checkpoint, checked against its geometry.

    ``config`` is a `ModelConfig`, a registered name (``lpm-17b``, ``lpm-1.3b``, ...), a path to
    a ModelConfig JSON file, or ``auto``: the first of `AUTO_CANDIDATES` that fits, else a config
    derived from the checkpoint (named ``lpm-from-wan``, other fields from ``lpm-1.3b``).

    Raises:
        ValueError: the config does not fit the checkpoint (every mismatch is listed).
    """
    if isinstance(config, ModelConfig):
        cfg = config
    elif str(config) == "auto":
        for name in AUTO_CANDIDATES:
            if not geometry_mismatches(geom, MODEL_CONFIGS[name]):
                return MODEL_CONFIGS[name]
        if geom.num_heads is None:
            raise ValueError(
                "the checkpoint matches no named config and has no config.json giving its head "
                "count; pass a config (a name or a ModelConfig JSON file)"
            )
        base = get_model_config(AUTO_CANDIDATES[-1])
        cfg = base.replace(
            name="lpm-from-wan", dim=geom.dim, num_heads=geom.num_heads, ffn_dim=geom.ffn_dim,
            num_layers=geom.num_layers, freq_dim=geom.freq_dim, text_dim=geom.text_dim,
            in_channels=LATENT_CHANNELS, out_channels=geom.out_channels,
            patch_size=geom.patch_size, qk_norm=geom.qk_norm, cross_attn_norm=geom.cross_attn_norm,
            eps=geom.eps if geom.eps is not None else base.eps,
        )  # fmt: skip
    elif str(config).endswith(".json") or Path(config).is_file():
        data = read_json(Path(config))
        if data is None:
            raise FileNotFoundError(f"config file {config} does not exist")
        cfg = ModelConfig.from_dict(data)
    else:
        cfg = get_model_config(str(config))
    problems = geometry_mismatches(geom, cfg)
    if problems:
        raise ValueError(
            f"the Wan2.1 checkpoint does not fit config {cfg.name!r}: {'; '.join(problems)}. "
            "Choose the matching config (Wan2.1-T2V-1.3B -> lpm-1.3b, Wan2.1-I2V-14B -> lpm-17b) "
            "or auto"
        )
    return cfg


# ---- conversion ------------------------------------------------------------------------------
@dataclass(frozen=True)
class ConversionPlan:
    """Which Wan2.1 tensor feeds which LPM tensor; built and checked before any tensor is read."""

    cfg: ModelConfig
    layout: WanLayout
    sources: dict[str, str]
    """Our key -> Wan2.1 name, for every non-audio tensor."""
    fresh: tuple[str, ...]
    """Our audio keys, freshly initialised."""
    dropped: tuple[str, ...]
    """Wan2.1 names deliberately left out (I2V's CLIP image branch)."""
    reduce_in_channels: bool
    """True when the 36-channel I2V patch embedding is cut to its first 16 input channels."""


def plan_conversion(ckpt: WanCheckpoint, cfg: ModelConfig) -> ConversionPlan:
    """Map every tensor and check every shape against ``cfg``, reading only file headers.

    Raises:
        ValueError: a missing Wan2.1 tensor, an unexpected one, or a wrong shape; the message
            names the tensor and the shape expected.
    """
    problems = geometry_mismatches(ckpt.geometry, cfg)
    if problems:
        raise ValueError(
            f"{ckpt.source.where} does not fit config {cfg.name!r}: {'; '.join(problems)}"
        )
    layout, names = ckpt.layout, set(ckpt.names())
    sources, fresh = {}, []
    for key, shape in expected_shapes(cfg).items():
        if is_fresh(key):
            fresh.append(key)
            continue
        name = source_key(key, layout)
        if name not in names:
            raise ValueError(
                f"{ckpt.source.where} lacks {name!r} (expected shape "
                f"{_wan_shape(key, shape, ckpt)}), needed for {key!r}; the checkpoint is "
                "incomplete or not a Wan2.1 transformer"
            )
        got, want = ckpt.shape(name), _wan_shape(key, shape, ckpt)
        if got != want:
            raise ValueError(
                f"tensor {name!r} in {ckpt.source.where} has shape {got}; expected {want} "
                f"for config {cfg.name!r} (our {key!r} is {shape})"
            )
        sources[key] = name
    used = set(sources.values())
    dropped = sorted(n for n in names - used if is_dropped(n, layout))
    unexpected = sorted(names - used - set(dropped))
    if unexpected:
        raise ValueError(
            f"{ckpt.source.where} has {len(unexpected)} tensors with no place in LPM, e.g. "
            f"{unexpected[:6]}; only plain Wan2.1 T2V/I2V transformers are converted"
        )
    return ConversionPlan(
        cfg=cfg,
        layout=layout,
        sources=sources,
        fresh=tuple(fresh),
        dropped=tuple(dropped),
        reduce_in_channels=ckpt.geometry.in_channels != cfg.in_channels,
    )


def _wan_shape(key: str, shape: tuple[int, ...], ckpt: WanCheckpoint) -> tuple[int, ...]:
    """The shape the Wan2.1 tensor behind our ``key`` must have."""
    if key.endswith("modulation"):
        return (1, *shape[2:])  # no frame axis in Wan2.1
    if key == "patch_embed.weight" and ckpt.geometry.in_channels == I2V_IN_CHANNELS:
        return (shape[0], I2V_IN_CHANNELS, *shape[2:])
    return shape


def convert_tensor(key: str, tensor: torch.Tensor, plan: ConversionPlan) -> torch.Tensor:
    """One Wan2.1 tensor in LPM's form (modulation frame axis, I2V channel reduction)."""
    if key.endswith("modulation"):
        return tensor.unsqueeze(1)  # (1, k, D) -> (1, 1, k, D): per-frame modulation
    if key == "patch_embed.weight" and plan.reduce_in_channels:
        # I2V input is cat[noisy latent, mask, first-frame latent] on channels: keep the latent.
        return tensor[:, :LATENT_CHANNELS].contiguous()
    return tensor


def fresh_audio_tensors(cfg: ModelConfig, *, seed: int = 0) -> Iterator[tuple[str, torch.Tensor]]:
    """LPM's audio tensors as a new `LPMTransformer` initialises them, built one layer at a time.

    Deterministic in ``seed``; the global RNG is left untouched.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        with torch.device("meta"):
            model = LPMTransformer(cfg.replace(num_layers=1))
        for prefix in ("audio_embed", "speak_embed"):
            embed = getattr(model, prefix)
            if embed is None:
                continue
            embed = embed.to_empty(device="cpu")
            for module in embed.modules():
                if isinstance(module, torch.nn.Linear):
                    module.reset_parameters()
            for name, tensor in embed.state_dict().items():
                yield f"{prefix}.{name}", tensor
        for layer in range(cfg.num_layers):
            cross = CrossAttention(cfg, cfg.audio_stream(layer))
            for name, tensor in cross.state_dict().items():
                key = f"blocks.{layer}.cross_attn.{name}"
                if is_fresh(key):
                    yield key, tensor


def iter_converted(
    ckpt: WanCheckpoint,
    plan: ConversionPlan,
    *,
    dtype: torch.dtype | None = None,
    include_fresh: bool = True,
    seed: int = 0,
    progress: ProgressFn | None = None,
) -> Iterator[tuple[str, torch.Tensor]]:
    """``(our key, tensor)`` for every LPM tensor, reading the source one shard at a time.

    ``dtype`` casts floating tensors (None keeps the source dtypes; audio tensors then take the
    patch embedding's dtype). ``progress(done, total, shard)`` is called after each source shard.
    """
    by_file: dict[Path, list[str]] = {}
    for key, name in plan.sources.items():
        by_file.setdefault(ckpt.file_of(name), []).append(key)
    files = [f for f in ckpt.source.files if f in by_file]
    for i, file in enumerate(files, start=1):
        for key in by_file[file]:
            tensor = convert_tensor(key, ckpt.get(plan.sources[key]), plan)
            yield (
                key,
                tensor.to(dtype) if dtype is not None and tensor.is_floating_point() else tensor,
            )
        if progress is not None:
            progress(i, len(files), file.name)
    if include_fresh:
        fresh_dtype = dtype or ckpt.dtype("patch_embedding.weight")
        for key, tensor in fresh_audio_tensors(plan.cfg, seed=seed):
            yield key, tensor.to(fresh_dtype)


@dataclass(frozen=True)
class ConversionReport:
    """What a conversion did."""

    config: ModelConfig
    layout: WanLayout
    source: str
    converted: int
    """Tensors taken from Wan2.1."""
    fresh: int
    """Audio tensors freshly initialised."""
    dropped: tuple[str, ...]
    """Wan2.1 tensors left out (I2V's image branch)."""
    reduced_in_channels: bool
    """True when the 36-channel I2V patch embedding was cut to 16 channels."""

    def to_dict(self) -> dict:
        data = dataclasses.asdict(self)
        data["config"] = self.config.name
        return data


def convert_wan_checkpoint(
    src: str | Path,
    out: str | Path,
    *,
    config: str | Path | ModelConfig = "auto",
    dtype: torch.dtype | None = None,
    seed: int = 0,
    overwrite: bool = False,
    max_shard_bytes: int | None = None,
    progress: ProgressFn | None = None,
) -> ConversionReport:
    """Convert a Wan2.1 transformer checkpoint at ``src`` into an LPM checkpoint at ``out``.

    Everything is checked (layout, geometry against the config, every name and shape) before a
    byte is written; the output appears only when complete. See `resolve_config` for ``config``.

    Raises:
        FileNotFoundError: ``src`` or a shard is missing.
        FileExistsError: ``out`` exists and ``overwrite`` is False.
        ValueError: ``src`` is not a Wan2.1 transformer, or does not fit the config.
    """
    ckpt = WanCheckpoint(src)
    cfg = resolve_config(ckpt.geometry, config)
    plan = plan_conversion(ckpt, cfg)
    if Path(out).exists() and not overwrite:
        raise FileExistsError(f"{out} already exists; choose another output or overwrite it")
    report = ConversionReport(
        config=cfg,
        layout=plan.layout,
        source=ckpt.source.where,
        converted=len(plan.sources),
        fresh=len(plan.fresh),
        dropped=plan.dropped,
        reduced_in_channels=plan.reduce_in_channels,
    )
    metadata = {"lpm_converted_from": f"wan2.1 ({plan.layout} layout)", "lpm_seed": str(seed)}
    kwargs = {} if max_shard_bytes is None else {"max_shard_bytes": max_shard_bytes}
    with ckpt.source:
        tensors = iter_converted(ckpt, plan, dtype=dtype, seed=seed, progress=progress)
        write_lpm_checkpoint(cfg, tensors, out, overwrite=overwrite, metadata=metadata, **kwargs)
    return report


def load_wan_weights(
    model: LPMTransformer, src: str | Path, *, progress: ProgressFn | None = None
) -> ConversionReport:
    """Load a Wan2.1 transformer checkpoint into ``model`` in memory; audio modules are untouched.

    Tensors are cast to the dtype of the parameter they replace.
    """
    ckpt = WanCheckpoint(src)
    plan = plan_conversion(ckpt, model.cfg)
    params = model.state_dict()
    with ckpt.source, torch.no_grad():
        for key, tensor in iter_converted(ckpt, plan, include_fresh=False, progress=progress):
            params[key].copy_(tensor)
    return ConversionReport(
        config=model.cfg,
        layout=plan.layout,
        source=ckpt.source.where,
        converted=len(plan.sources),
        fresh=len(plan.fresh),
        dropped=plan.dropped,
        reduced_in_channels=plan.reduce_in_channels,
    )
