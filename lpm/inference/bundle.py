"""A model bundle: the transformer and the encoders/decoders one generation needs.

A bundle is a directory::

    <dir>/bundle.json        BundleSpec: which encoders, resolution, sampling defaults
    <dir>/transformer/       LPM checkpoint (config.json + model*.safetensors)
    <dir>/refiner/           optional: the online refiner, also an LPM checkpoint
    <dir>/vae/               Wan VAE, diffusers layout (config.json + safetensors), or the
                             nano VAE (config.json marked LPMNanoVAE + model.safetensors)
    <dir>/light_decoder/     optional: config.json + model.safetensors
    <dir>/text_encoder/      nano: config.json + model.safetensors; umt5: a local umT5 folder
    <dir>/audio_encoder/     logmel: config.json; wav2vec2: a local folder (+ layer weights)

A component path in ``bundle.json`` may point elsewhere (absolute, or relative to the bundle),
so a real-scale bundle can reference the Wan2.1 VAE and umT5 folders where they already are.
Everything is safetensors or JSON: nothing is unpickled.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from dataclasses import dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file
from torch import nn

from lpm.device import resolve_device
from lpm.inference.chunk_step import OnlineSchedule
from lpm.models.dit.checkpoint import atomic_directory, load_lpm_checkpoint, save_lpm_checkpoint
from lpm.models.dit.model import LPMTransformer
from lpm.models.serialization import load_module, read_config, save_module, write_config

BUNDLE_FORMAT = "lpm-bundle"
BUNDLE_VERSION = 1
TEXT_ENCODERS = ("nano", "umt5", "minilm")
AUDIO_ENCODERS = ("logmel", "wav2vec2")
DECODERS = ("vae", "light")


def shipped_bundle_path(name: str = "lpm-nano") -> Path:
    """Directory of a bundle shipped inside the package; a clear error when it is absent."""
    path = Path(__file__).resolve().parents[1] / "weights" / name
    if not (path / "bundle.json").is_file():
        raise FileNotFoundError(
            f"this lpm build ships no {name!r} weights (looked in {path}); train them with "
            f"`lpm train --recipe nano-base` or pass --model DIR with a bundle directory"
        )
    return path


@dataclass(kw_only=True)
class SamplingDefaults:
    """Sampling settings a bundle recommends; every one can be overridden per call."""

    steps: int = 20
    """Denoising steps per segment."""
    shift: float = 5.0
    """Wan-style timestep shift of the inference schedule."""
    text_scale: float = 4.0
    """Classifier-free guidance scale of the text condition."""
    audio_scale: float = 4.0
    """Classifier-free guidance scale of the audio condition (on top of text)."""
    cue_scale: float = 0.0
    """Guidance scale of timed text cues (a model with ``text_cues``) as a level of their own
    between text and audio (one more model pass); 0 guides them with the text."""
    cue_min_sigma: float = 0.0
    """Cue guidance acts only at noise levels σ ≥ this (the coarse motion an action is made
    of); below it the cues are followed unguided, sparing the fine detail (a closed mouth)."""
    solver: str = "unipc"
    """``unipc`` or ``euler``."""
    context_sigma: float = 0.0
    """Noise level σ put on a continuing segment's context latents (the previous segment's
    output) for a model trained with stage ``context_noise``; 0 holds them clean."""

    def __post_init__(self) -> None:
        if not 0.0 <= self.context_sigma < 1.0:
            raise ValueError(f"context_sigma must be in [0, 1), got {self.context_sigma}")
        if self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.solver not in ("unipc", "euler"):
            raise ValueError(f"solver must be 'unipc' or 'euler', got {self.solver!r}")
        if self.shift <= 0:
            raise ValueError(f"shift must be > 0, got {self.shift}")
        if self.cue_scale < 0:
            raise ValueError(f"cue_scale must be >= 0, got {self.cue_scale}")
        if not 0.0 <= self.cue_min_sigma <= 1.0:
            raise ValueError(f"cue_min_sigma must be in [0, 1], got {self.cue_min_sigma}")


@dataclass(kw_only=True)
class BundleSpec:
    """What `bundle.json` records."""

    name: str
    height: int
    """Generated frame height in pixels."""
    width: int
    """Generated frame width in pixels."""
    sample_rate: int = 16000
    """Audio sample rate the audio encoder expects, in Hz."""
    text_encoder: str = "nano"
    audio_encoder: str = "logmel"
    decoder: str = "vae"
    """Offline decoder: the VAE, or the light distilled decoder."""
    segment_latents: int = 32
    """Latent frames generated per offline segment (32 latents = 128 frames = 5.3 s at 24 fps)."""
    context_latents: int = 3
    """Clean latents carried from the previous segment into the next one."""
    blend_latents: int = 2
    """Latents after the context that are regenerated and cross-faded with the previous segment."""
    sampling: SamplingDefaults = field(default_factory=SamplingDefaults)
    online: OnlineSchedule | None = None
    """Timesteps of a distilled online backbone/refiner; None for an offline (Base) bundle."""
    paths: dict[str, str] = field(default_factory=dict)
    """Component name -> directory, absolute or relative to the bundle; default ``<name>/``."""

    def __post_init__(self) -> None:
        if self.text_encoder not in TEXT_ENCODERS:
            raise ValueError(f"text_encoder={self.text_encoder!r}: use one of {TEXT_ENCODERS}")
        if self.audio_encoder not in AUDIO_ENCODERS:
            raise ValueError(f"audio_encoder={self.audio_encoder!r}: use one of {AUDIO_ENCODERS}")
        if self.decoder not in DECODERS:
            raise ValueError(f"decoder={self.decoder!r}: use one of {DECODERS}")
        if self.segment_latents <= self.context_latents + self.blend_latents:
            raise ValueError("segment_latents must exceed context_latents + blend_latents")
        if self.context_latents < 1 or self.blend_latents < 0:
            raise ValueError("context_latents must be >= 1 and blend_latents >= 0")
        if isinstance(self.sampling, dict):
            self.sampling = SamplingDefaults(**self.sampling)
        if isinstance(self.online, dict):
            online = dict(self.online)
            online["backbone_timesteps"] = tuple(online.get("backbone_timesteps", ()))
            self.online = OnlineSchedule(**online)

    def to_json(self) -> str:
        data = dataclasses.asdict(self)
        data.update(format=BUNDLE_FORMAT, version=BUNDLE_VERSION)
        return json.dumps(data, indent=2, sort_keys=True)

    @classmethod
    def from_file(cls, path: Path) -> BundleSpec:
        try:
            data = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ValueError(f"{path} is not a readable bundle.json: {err}") from None
        if data.pop("format", None) != BUNDLE_FORMAT:
            raise ValueError(f"{path} is not an LPM bundle (format must be {BUNDLE_FORMAT!r})")
        version = data.pop("version", None)
        if version != BUNDLE_VERSION:
            raise ValueError(
                f"{path} has bundle version {version}; this lpm reads {BUNDLE_VERSION}"
            )
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{path} has unknown fields {sorted(unknown)}")
        return cls(**data)


class ModelBundle:
    """Loaded components of one model; `lpm.inference.Pipeline` drives them."""

    def __init__(
        self,
        spec: BundleSpec,
        *,
        transformer: LPMTransformer,
        vae: nn.Module,
        text_encoder: nn.Module,
        audio_encoder: nn.Module,
        light_decoder: nn.Module | None = None,
        refiner: LPMTransformer | None = None,
    ) -> None:
        if spec.decoder == "light" and light_decoder is None:
            raise ValueError("spec.decoder is 'light' but no light decoder was given")
        cfg = transformer.cfg
        cfg.latent_grid(spec.height, spec.width)  # raises on a resolution the model cannot take
        if getattr(text_encoder, "dim", cfg.text_dim) != cfg.text_dim:
            raise ValueError(
                f"text encoder width {text_encoder.dim} != model text_dim {cfg.text_dim}"
            )
        self.spec = spec
        self.transformer = transformer
        self.vae = vae
        self.text_encoder = text_encoder
        self.audio_encoder = audio_encoder
        self.light_decoder = light_decoder
        self.refiner = refiner
        if refiner is not None and refiner.cfg.in_channels != cfg.out_channels:
            raise ValueError(
                "the refiner's input channels must equal the backbone's output channels"
            )

    def spec_online_schedule(self) -> OnlineSchedule:
        """The bundle's online timesteps, or the defaults when it records none."""
        return self.spec.online or OnlineSchedule()

    @property
    def cfg(self):
        return self.transformer.cfg

    def modules(self) -> dict[str, nn.Module]:
        mods = {
            "transformer": self.transformer,
            "vae": self.vae,
            "text_encoder": self.text_encoder,
            "audio_encoder": self.audio_encoder,
        }
        if self.light_decoder is not None:
            mods["light_decoder"] = self.light_decoder
        if self.refiner is not None:
            mods["refiner"] = self.refiner
        return mods

    def eval(self) -> ModelBundle:
        for module in self.modules().values():
            module.eval()
        return self

    # ---- saving -----------------------------------------------------------------------------
    def save(self, directory: str | Path, *, overwrite: bool = False, half: bool = False) -> Path:
        """Write the bundle atomically; ``half`` stores floating weights as fp16."""
        out = Path(directory)
        with atomic_directory(out, overwrite=overwrite) as tmp:
            (tmp / "bundle.json").write_text(self.spec.to_json())
            model = self.transformer
            if half:
                model = _half_copy(model)
            save_lpm_checkpoint(model, tmp / "transformer")
            if self.refiner is not None:
                save_lpm_checkpoint(
                    _half_copy(self.refiner) if half else self.refiner, tmp / "refiner"
                )
            if hasattr(self.vae, "save"):  # the nano VAE: config.json + model.safetensors
                self.vae.save(tmp / "vae", half=half)
            else:  # a Wan VAE: diffusers layout
                vae = copy.deepcopy(self.vae.model).half() if half else self.vae.model
                vae.save_pretrained(tmp / "vae", safe_serialization=True)
            if self.spec.text_encoder == "nano":
                save_module(self.text_encoder, self.text_encoder.config, tmp / "text_encoder", half)
            if self.spec.audio_encoder == "logmel":
                write_config(tmp / "audio_encoder", self.audio_encoder.config)
            if self.light_decoder is not None:
                save_module(
                    self.light_decoder, self.light_decoder.config, tmp / "light_decoder", half
                )
        return out

    # ---- loading ----------------------------------------------------------------------------
    @classmethod
    def load(
        cls,
        directory: str | Path,
        *,
        device: str | torch.device = "cpu",
        dtype: str | torch.dtype | None = None,
    ) -> ModelBundle:
        """Load every component of a bundle directory onto ``device``.

        The transformer (and refiner) are stored in ``dtype`` (`transformer_dtype`: by default
        bf16 on a GPU, float32 on the CPU) and run at that precision; the encoders and decoders
        stay in float32.
        """
        from lpm.models.vae import LightDecoder, LightDecoderConfig

        device = resolve_device(device)
        dtype = transformer_dtype(dtype, device)
        root = Path(directory)
        if not (root / "bundle.json").is_file():
            raise FileNotFoundError(
                f"{root} is not an LPM bundle: it has no bundle.json (see lpm/inference/bundle.py)"
            )
        spec = BundleSpec.from_file(root / "bundle.json")

        def where(name: str) -> Path:
            return (root / spec.paths.get(name, name)).expanduser()

        transformer = load_lpm_checkpoint(where("transformer"), device=device, dtype=dtype)
        vae, text, audio = _load_encoders(
            spec, where, device, transformer.cfg.fps, transformer.cfg.text_len
        )
        refiner = None
        if (where("refiner") / "config.json").is_file():
            refiner = load_lpm_checkpoint(where("refiner"), device=device, dtype=dtype)
        light = None
        if where("light_decoder").is_dir():
            light = load_module(LightDecoder, LightDecoderConfig, where("light_decoder"))
        bundle = cls(
            spec,
            transformer=transformer,
            vae=vae,
            text_encoder=text.to(device),
            audio_encoder=audio.to(device),
            light_decoder=light,
            refiner=refiner,
        )
        if light is not None:
            light.to(device)
        return bundle.eval()


TRANSFORMER_DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def transformer_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """The dtype a ``--dtype`` value names (``auto``/None: bf16 on a GPU, float32 on the CPU)."""
    if isinstance(dtype, torch.dtype):
        if dtype not in TRANSFORMER_DTYPES.values():
            raise ValueError(f"dtype {dtype} is not one of {list(TRANSFORMER_DTYPES)}")
        return dtype
    if dtype in (None, "auto"):
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    if dtype not in TRANSFORMER_DTYPES:
        raise ValueError(f"dtype {dtype!r} must be auto or one of {list(TRANSFORMER_DTYPES)}")
    return TRANSFORMER_DTYPES[dtype]


def load_encoders(directory: str | Path, *, device: str | torch.device = "cpu"):
    """(spec, vae, text encoder, audio encoder) of a bundle, without loading its transformer."""
    from lpm.models.dit.checkpoint import load_lpm_config

    device = resolve_device(device)
    root = Path(directory)
    if not (root / "bundle.json").is_file():
        raise FileNotFoundError(f"{root} is not an LPM bundle: it has no bundle.json")
    spec = BundleSpec.from_file(root / "bundle.json")
    where = lambda name: (root / spec.paths.get(name, name)).expanduser()
    cfg = load_lpm_config(where("transformer"))
    vae, text, audio = _load_encoders(spec, where, device, cfg.fps, cfg.text_len)
    return spec, vae.eval(), text.eval(), audio.eval()


def _load_encoders(spec: BundleSpec, where, device, fps: int, text_len: int):
    from lpm.models.audio import LogMelConfig, LogMelFeatures, Wav2Vec2Features, load_wav2vec2
    from lpm.models.text import NanoTextEncoder, NanoTextEncoderConfig, load_minilm, load_umt5
    from lpm.models.vae import load_vae

    vae = load_vae(where("vae"), device=device)
    if spec.text_encoder == "nano":
        text = load_module(NanoTextEncoder, NanoTextEncoderConfig, where("text_encoder"))
    elif spec.text_encoder == "umt5":
        text = load_umt5(where("text_encoder"), max_length=text_len)
    else:
        text = load_minilm(spec.paths.get("text_encoder"))
    if spec.audio_encoder == "logmel":
        audio = LogMelFeatures(read_config(LogMelConfig, where("audio_encoder")))
    else:
        backbone = load_wav2vec2(where("audio_encoder"), device=device)
        audio = Wav2Vec2Features(backbone, fps=fps, sample_rate=spec.sample_rate)
        weights = where("audio_encoder") / "layer_weights.safetensors"
        if weights.is_file():
            audio.load_state_dict(load_file(weights), strict=False)
    return vae, text.to(device), audio.to(device)


def _half_copy(model: LPMTransformer) -> LPMTransformer:
    clone = LPMTransformer(model.cfg)
    clone.load_state_dict(model.state_dict())
    return clone.half()


def untrained_bundle(config: str = "lpm-nano-online", *, size: int = 128) -> ModelBundle:
    """The nano bundle architecture with fresh random weights: for tests, demos and speed runs.

    Transformer (and, for an ``-online`` config, a refiner of the same config), tiny Wan VAE,
    nano text encoder, log-mel audio features and the light decoder. Speed depends only on the
    architecture, so this times exactly like the trained model; its video is noise.
    """
    from lpm.config import get_model_config
    from lpm.models.audio import LogMelFeatures
    from lpm.models.text import NanoTextEncoder
    from lpm.models.vae import LightDecoder, WanVAEConfig, build_wan_vae

    cfg = get_model_config(config)
    online = cfg.attention == "chunk_causal"
    spec = BundleSpec(name=f"{config} (untrained)", height=size, width=size, decoder="light",
                      online=OnlineSchedule() if online else None)  # fmt: skip
    return ModelBundle(
        spec,
        transformer=LPMTransformer(cfg),
        refiner=LPMTransformer(cfg) if online else None,
        vae=build_wan_vae(WanVAEConfig.tiny()),
        text_encoder=NanoTextEncoder(),
        audio_encoder=LogMelFeatures(),
        light_decoder=LightDecoder(),
    ).eval()


_PROMPT_WORDS = ("a", "the", "person", "character", "speaks", "listens", "nods", "smiles",
                 "cheerful", "calm", "talks")  # fmt: skip


def untrained_real_bundle(
    config: str = "lpm-1.3b-online",
    *,
    height: int = 480,
    width: int = 832,
    device: str | torch.device = "cpu",
    dtype: str | torch.dtype | None = None,
    decoder: str = "vae",
    audio_layers: int = 24,
    overrides: dict | None = None,
) -> ModelBundle:
    """A real-scale bundle architecture with random weights, built on ``device``: speed runs.

    The transformer (and, for an ``-online`` config, a refiner) of ``config`` in ``dtype``
    (`transformer_dtype`), the Wan2.1 VAE, a wav2vec2 of the transformer's audio width with
    ``audio_layers`` layers (24: wav2vec2-large) and, for ``decoder="light"``, the light
    streaming decoder. Both run every chunk, so they are timed at their real size. The text
    encoder is a one-layer umT5 of the transformer's text width: text is encoded once per prompt,
    not per chunk, and umT5-XXL's 5.7B parameters would only cost set-up time and memory.
    ``overrides`` replace fields of the model config (e.g. ``num_layers`` for a CPU check).
    """
    from transformers import UMT5Config, UMT5EncoderModel, Wav2Vec2Config, Wav2Vec2Model

    from lpm.config import get_model_config
    from lpm.models.audio import Wav2Vec2Features
    from lpm.models.text import UMT5TextEncoder, word_tokenizer
    from lpm.models.vae import LightDecoder, WanVAEConfig, build_wan_vae

    if decoder not in DECODERS:
        raise ValueError(f"decoder={decoder!r}: use one of {DECODERS}")
    cfg = get_model_config(config)
    if overrides:
        cfg = cfg.replace(**overrides)
    dev = resolve_device(device)
    dt = transformer_dtype(dtype, dev)
    online = cfg.attention == "chunk_causal"
    spec = BundleSpec(name=f"{cfg.name} (untrained)", height=height, width=width,
                      text_encoder="umt5", audio_encoder="wav2vec2", decoder=decoder,
                      online=OnlineSchedule() if online else None)  # fmt: skip
    heads = max(1, cfg.audio_dim // 64)
    wav2vec2 = Wav2Vec2Config(
        hidden_size=cfg.audio_dim, num_hidden_layers=audio_layers, num_attention_heads=heads,
        intermediate_size=4 * cfg.audio_dim, feat_extract_norm="layer", do_stable_layer_norm=True,
    )  # fmt: skip
    tokenizer = word_tokenizer(_PROMPT_WORDS)
    umt5 = UMT5Config(
        vocab_size=tokenizer.vocab_size, d_model=cfg.text_dim, d_kv=64, d_ff=cfg.text_dim,
        num_layers=1, num_heads=max(1, cfg.text_dim // 64),
    )  # fmt: skip
    with torch.device(dev):  # built where it runs: no host copy of a large model
        transformer = LPMTransformer(cfg).to(dt)
        refiner = LPMTransformer(cfg).to(dt) if online else None
        bundle = ModelBundle(
            spec,
            transformer=transformer,
            refiner=refiner,
            vae=build_wan_vae(WanVAEConfig.wan21()),
            text_encoder=UMT5TextEncoder(
                UMT5EncoderModel(umt5), tokenizer, max_length=cfg.text_len
            ),
            audio_encoder=Wav2Vec2Features(Wav2Vec2Model(wav2vec2), fps=cfg.fps),
            light_decoder=LightDecoder() if decoder == "light" else None,
        )
    return bundle.eval()
