"""Assembling a model bundle from what training produced (`lpm model pack`).

A bundle needs a transformer, a VAE (+ optional light decoder) and text/audio encoders. They come
from three places:

- ``vae_dir``: the output of `lpm train-vae` (``vae/`` and ``light_decoder/``);
- ``checkpoint``: a training run directory (its latest checkpoint) or one checkpoint directory;
  its EMA weights are used when it has them. Without a checkpoint the transformer is freshly
  initialised: such an *encoders bundle* is what `lpm data encode` needs before any DiT exists;
- ``encoders``: an existing bundle whose text and audio encoders are reused. The DiT learns the
  text features of the encoder that cached its data, so the final bundle must carry that very
  encoder: pack the encoders bundle first, encode with it, then pack the trained model with
  ``encoders=`` pointing at it.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import torch

from lpm.inference.bundle import BundleSpec, ModelBundle, SamplingDefaults, load_encoders


@dataclass(kw_only=True)
class PackSettings:
    """What `pack_bundle` writes into ``bundle.json`` besides the components."""

    name: str
    config: str = "lpm-nano"
    """Model config of a freshly initialised transformer (ignored with a checkpoint)."""
    size: int = 64
    """Generated frame height and width in pixels."""
    segment_latents: int = 12
    """Latent frames per offline segment: the training clip length suits best."""
    context_latents: int = 3
    blend_latents: int = 2
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    decoder: str = "vae"
    text_seed: int = 0
    """Seed of a new nano text encoder (when no ``encoders`` bundle is given)."""


def resolve_checkpoint(path: str | Path) -> Path:
    """An LPM checkpoint directory from a run directory, a training checkpoint or an LPM dir.

    Prefers the EMA weights (``ema/``) of a training checkpoint.
    """
    from lpm.train.checkpoint import latest_checkpoint

    path = Path(path)
    if not path.is_dir():
        raise FileNotFoundError(f"checkpoint {path} does not exist")
    if (path / "checkpoints").is_dir():
        found = latest_checkpoint(path)
        if found is None:
            raise FileNotFoundError(f"run {path} has no complete checkpoint yet")
        path = found
    if (path / "ema" / "config.json").is_file():
        return path / "ema"
    if (path / "config.json").is_file():
        return path
    raise FileNotFoundError(f"{path} holds no LPM checkpoint (config.json + model.safetensors)")


def pack_bundle(
    settings: PackSettings,
    *,
    vae_dir: str | Path,
    out: str | Path,
    checkpoint: str | Path | None = None,
    encoders: str | Path | None = None,
    half: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write a bundle directory at ``out`` (atomically) and return its path."""
    from lpm.config import get_model_config
    from lpm.models.audio import LogMelFeatures
    from lpm.models.dit.checkpoint import load_lpm_checkpoint
    from lpm.models.dit.model import LPMTransformer
    from lpm.models.serialization import load_module
    from lpm.models.text import NanoTextEncoder
    from lpm.models.vae import LightDecoder, LightDecoderConfig, load_vae

    vae_dir = Path(vae_dir)
    vae = load_vae(vae_dir)
    light = None
    if (vae_dir / "light_decoder" / "config.json").is_file():
        light = load_module(LightDecoder, LightDecoderConfig, vae_dir / "light_decoder")
    if settings.decoder == "light" and light is None:
        raise FileNotFoundError(f"{vae_dir} has no light_decoder/ (finish `lpm train-vae`)")
    if checkpoint is not None:
        transformer = load_lpm_checkpoint(resolve_checkpoint(checkpoint), dtype=torch.float32)
    else:
        torch.manual_seed(settings.text_seed)
        transformer = LPMTransformer(get_model_config(settings.config))
    if encoders is not None:
        enc_spec, _, text, audio = load_encoders(encoders)
        if enc_spec.text_encoder != "nano" or enc_spec.audio_encoder != "logmel":
            raise ValueError(f"{encoders}: only nano text + logmel audio encoders can be packed")
    else:
        torch.manual_seed(settings.text_seed)
        text = NanoTextEncoder()
        audio = LogMelFeatures()
    spec = BundleSpec(
        name=settings.name,
        height=settings.size,
        width=settings.size,
        decoder=settings.decoder,
        segment_latents=settings.segment_latents,
        context_latents=settings.context_latents,
        blend_latents=settings.blend_latents,
        sampling=settings.sampling,
    )
    bundle = ModelBundle(spec, transformer=transformer, vae=vae, text_encoder=text,
                         audio_encoder=audio, light_decoder=light)  # fmt: skip
    return bundle.save(out, overwrite=overwrite, half=half)


def pack_online_bundle(
    base: str | Path,
    *,
    backbone: str | Path,
    refiner: str | Path | None,
    out: str | Path,
    schedule,
    name: str = "lpm-nano-online",
    rank: int = 32,
    overwrite: bool = False,
) -> dict:
    """Write an Online LPM bundle that shares ``base``'s encoders and decoders.

    ``backbone`` and ``refiner`` (distill runs or checkpoints; EMA preferred; no refiner: the
    stream skips the refining step, as after stages 1-3) are stored as
    rank-``rank`` deltas from ``base``'s transformer (`lpm.models.dit.delta`), and the bundle's
    ``paths`` point at ``base``'s VAE, light decoder and text/audio encoders, relative to the
    bundle, so both bundles move together. Returns the two `DeltaReport`s as a dict.

    Raises:
        FileNotFoundError: a missing base bundle or checkpoint.
        ValueError: a student whose architecture differs from the base's, or a non-causal one.
    """
    import dataclasses
    import os

    from lpm.models.dit.checkpoint import atomic_directory, load_lpm_checkpoint
    from lpm.models.dit.delta import save_delta_checkpoint

    base, out = Path(base), Path(out)
    if not (base / "bundle.json").is_file():
        raise FileNotFoundError(f"{base} is not an LPM bundle (no bundle.json)")
    base_spec = BundleSpec.from_file(base / "bundle.json")
    roles = {"transformer": backbone, "refiner": refiner}
    students = {
        role: load_lpm_checkpoint(resolve_checkpoint(path), dtype=torch.float32)
        for role, path in roles.items()
        if path is not None
    }
    for role, model in students.items():
        if model.cfg.attention != "chunk_causal":
            raise ValueError(f"the {role} must be a distilled (chunk_causal) model")
    reports = {}
    with atomic_directory(out, overwrite=overwrite) as tmp:
        paths = {}
        for part in ("vae", "light_decoder", "text_encoder", "audio_encoder"):
            where = base / base_spec.paths.get(part, part)
            if where.is_dir():
                paths[part] = os.path.relpath(where.resolve(), out.resolve())
        spec = dataclasses.replace(base_spec, name=name, online=schedule, paths=paths)
        (tmp / "bundle.json").write_text(spec.to_json())
        base_transformer = base / base_spec.paths.get("transformer", "transformer")
        for role, model in students.items():
            ref = os.path.relpath(base_transformer.resolve(), (out / role).resolve())
            report = save_delta_checkpoint(model, base_transformer, tmp / role, rank=rank,
                                           base_ref=ref)  # fmt: skip
            reports[role] = dataclasses.asdict(report)
    return reports


def pack_finetuned(
    base: str | Path,
    *,
    checkpoint: str | Path,
    out: str | Path,
    name: str | None = None,
    half: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write ``base`` as a new bundle at ``out`` with its transformer replaced by a fine-tuned
    one (a run directory or checkpoint of the same architecture; EMA weights preferred), e.g.
    after DPO post-training. Everything else (encoders, decoders, sampling defaults) is kept.

    Raises:
        FileNotFoundError: a missing base bundle or checkpoint.
        ValueError: a checkpoint whose model config differs from the base transformer's.
    """
    import dataclasses

    from lpm.models.dit.checkpoint import load_lpm_checkpoint

    bundle = ModelBundle.load(base)
    model = load_lpm_checkpoint(resolve_checkpoint(checkpoint), dtype=torch.float32)
    if model.cfg.to_dict() != bundle.cfg.to_dict():
        raise ValueError(
            f"{checkpoint} holds a {model.cfg.name!r} model that differs from the transformer of "
            f"{base}; fine-tune from that bundle or pack with `lpm model pack`"
        )
    bundle.transformer = model
    bundle.spec = dataclasses.replace(bundle.spec, name=name or f"{bundle.spec.name}-dpo")
    return bundle.save(out, overwrite=overwrite, half=half)


def _component_config(path: Path, what: str, sub: str = "") -> tuple[Path, dict]:
    """(folder, config.json) of a component given as its folder or a pipeline root (``sub/``)."""
    import json

    path = Path(path).expanduser().resolve()
    if not path.is_dir():
        raise FileNotFoundError(f"{what} folder {path} does not exist")
    for folder in (path, path / sub) if sub else (path,):
        if (folder / "config.json").is_file():
            try:
                return path, json.loads((folder / "config.json").read_text())
            except ValueError as err:
                raise ValueError(f"{folder / 'config.json'} is not JSON: {err}") from None
    raise FileNotFoundError(f"no config.json in {path}{f' (nor in {sub}/)' if sub else ''}: "
                            f"not a {what} folder")  # fmt: skip


def link_bundle(
    *,
    out: str | Path,
    transformer: str | Path,
    vae: str | Path,
    text_encoder: str | Path,
    audio_encoder: str | Path,
    name: str,
    height: int = 480,
    width: int = 832,
    sample_rate: int = 16000,
    segment_latents: int = 30,
    sampling: SamplingDefaults | None = None,
    overwrite: bool = False,
) -> Path:
    """Write a bundle whose ``bundle.json`` points at components where they already are.

    For the real scales: the converted or trained transformer (a checkpoint, or a run directory
    whose latest EMA weights are used), the Wan2.1 VAE, umT5 and wav2vec2 folders (each its own
    folder or a diffusers pipeline root holding ``vae/`` / ``text_encoder/``). Nothing is
    copied. Only configs are read: the widths the transformer reads are checked against what
    the encoders produce, and every mismatch is named before anything is written.
    """
    from lpm.models.dit.checkpoint import load_lpm_config

    out = Path(out)
    if (out / "bundle.json").exists() and not overwrite:
        raise FileExistsError(f"{out} already holds a bundle; pass --overwrite to replace it")
    checkpoint = resolve_checkpoint(transformer).resolve()
    cfg = load_lpm_config(checkpoint)
    vae_dir, vae_cfg = _component_config(Path(vae), "VAE", "vae")
    text_dir, text_cfg = _component_config(Path(text_encoder), "umT5", "text_encoder")
    audio_dir, audio_cfg = _component_config(Path(audio_encoder), "wav2vec2")
    problems = []
    if vae_cfg.get("_class_name") != "AutoencoderKLWan":
        problems.append(f"VAE {vae_dir}: a {vae_cfg.get('_class_name')!r}, not an AutoencoderKLWan")
    elif vae_cfg.get("z_dim") != cfg.in_channels:
        problems.append(f"VAE z_dim {vae_cfg.get('z_dim')}, the transformer reads "
                        f"{cfg.in_channels} latent channels")  # fmt: skip
    if text_cfg.get("model_type") not in ("umt5", "t5", "mt5"):
        problems.append(f"text encoder {text_dir}: model_type {text_cfg.get('model_type')!r}, "
                        "not umt5")  # fmt: skip
    elif text_cfg.get("d_model") != cfg.text_dim:
        problems.append(f"text encoder width {text_cfg.get('d_model')}, the transformer reads "
                        f"{cfg.text_dim}")  # fmt: skip
    if audio_cfg.get("model_type") != "wav2vec2":
        problems.append(f"audio encoder {audio_dir}: model_type "
                        f"{audio_cfg.get('model_type')!r}, not wav2vec2")  # fmt: skip
    elif audio_cfg.get("hidden_size") != cfg.audio_dim:
        problems.append(f"audio encoder width {audio_cfg.get('hidden_size')}, the transformer "
                        f"reads {cfg.audio_dim}")  # fmt: skip
    step = cfg.spatial_compression * cfg.patch_size[1]
    if height % step or width % step:
        problems.append(f"frame {height}x{width}: height and width must be multiples of {step}")
    if problems:
        raise ValueError(f"cannot link {checkpoint}: " + "; ".join(problems))
    spec = BundleSpec(
        name=name, height=height, width=width, sample_rate=sample_rate, text_encoder="umt5",
        audio_encoder="wav2vec2", segment_latents=segment_latents,
        sampling=sampling or SamplingDefaults(),
        paths={"transformer": str(checkpoint), "vae": str(vae_dir),
               "text_encoder": str(text_dir), "audio_encoder": str(audio_dir)},
    )  # fmt: skip
    out.mkdir(parents=True, exist_ok=True)
    partial = out / ".bundle.json.partial"
    partial.write_text(spec.to_json())
    partial.replace(out / "bundle.json")
    return out
