"""Wan2.1 causal video VAE: a thin wrapper over `diffusers.AutoencoderKLWan`.

Shape legend
    B  batch
    T  video frames (pixel space); a clip starting at frame 0 has T = 1 + 4 * (F - 1)
    F  latent frames: F = 1 + (T - 1) // 4 (the first latent frame encodes one video frame,
       every later one encodes 4)
    H, W  pixel height / width (multiples of 8)
    h, w  latent height / width: h = H / 8, w = W / 8
    C  latent channels (16 for Wan2.1)

Value ranges
    video    float in [-1, 1], layout (B, 3, T, H, W)
    latents  *normalised* Wan latents, layout (B, C, F, h, w): the encoder's posterior mean minus
             the per-channel ``latents_mean``, divided by ``latents_std`` (both from the VAE
             config), so each channel is roughly zero-mean, unit-variance. This is the space the
             DiT denoises in.

The decoder is causal in time and keeps a per-convolution feature cache (the last two frames of
each causal 3D convolution's input). `StreamingVAEDecoder` owns such a cache, so latents can be
decoded one chunk at a time and give the same frames as decoding the whole clip at once.

Expected local directory layout for `load_wan_vae` (diffusers layout, e.g. the ``vae/`` folder of
``Wan-AI/Wan2.1-T2V-1.3B-Diffusers``)::

    <path>/config.json                                  AutoencoderKLWan config
    <path>/diffusion_pytorch_model.safetensors          weights (or a sharded *.safetensors set
                                                        with its *.safetensors.index.json)

A model root that holds the VAE under ``<path>/vae/`` is accepted too.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import torch
from torch import nn

if TYPE_CHECKING:  # diffusers is imported where a Wan VAE is built: it takes seconds to import
    from diffusers import AutoencoderKLWan

__all__ = [
    "WAN21_LATENTS_MEAN",
    "WAN21_LATENTS_STD",
    "StreamingVAEDecoder",
    "WanVAE",
    "WanVAEConfig",
    "build_wan_vae",
    "load_wan_vae",
]

# Per-channel statistics of Wan2.1 VAE latents (the values shipped in the Wan2.1 VAE config).
WAN21_LATENTS_MEAN: tuple[float, ...] = (
    -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
    0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
)  # fmt: skip
WAN21_LATENTS_STD: tuple[float, ...] = (
    2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
    3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
)  # fmt: skip


@dataclass(kw_only=True)
class WanVAEConfig:
    """Geometry of a Wan2.1-style causal video VAE (the arguments of `AutoencoderKLWan`)."""

    base_dim: int = 96
    """Channel width of the first encoder/decoder stage (Wan2.1: 96)."""
    z_dim: int = 16
    """Latent channels C (Wan2.1: 16)."""
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    """Per-stage width multipliers; 4 stages give the 8x spatial compression."""
    num_res_blocks: int = 2
    """Residual blocks per stage."""
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    """Which stage transitions also halve time (two of them give the 4x temporal compression).
    The misspelling follows diffusers' argument name."""
    latents_mean: tuple[float, ...] = WAN21_LATENTS_MEAN
    """Per-channel mean used to normalise latents (length z_dim)."""
    latents_std: tuple[float, ...] = WAN21_LATENTS_STD
    """Per-channel standard deviation used to normalise latents (length z_dim)."""

    def __post_init__(self) -> None:
        if self.base_dim < 1:
            raise ValueError(f"base_dim must be >= 1, got {self.base_dim}")
        if self.z_dim < 1:
            raise ValueError(f"z_dim must be >= 1, got {self.z_dim}")
        if self.num_res_blocks < 1:
            raise ValueError(f"num_res_blocks must be >= 1, got {self.num_res_blocks}")
        if len(self.dim_mult) != 4:
            raise ValueError(
                f"dim_mult must have 4 entries (8x spatial compression), got {self.dim_mult}"
            )
        if len(self.temperal_downsample) != 3 or sum(self.temperal_downsample) != 2:
            raise ValueError(
                "temperal_downsample must have 3 entries with exactly two True (4x temporal "
                f"compression), got {self.temperal_downsample}"
            )
        if len(self.latents_mean) != self.z_dim or len(self.latents_std) != self.z_dim:
            raise ValueError(
                f"latents_mean and latents_std need z_dim={self.z_dim} entries, got "
                f"{len(self.latents_mean)} and {len(self.latents_std)}"
            )
        if any(s <= 0 for s in self.latents_std):
            raise ValueError("latents_std entries must all be > 0")

    @classmethod
    def wan21(cls) -> WanVAEConfig:
        """The Wan2.1 VAE (≈127M parameters)."""
        return cls()

    @classmethod
    def tiny(cls, *, base_dim: int = 16) -> WanVAEConfig:
        """A tiny VAE with Wan's compression (4x8x8, 16 channels) for tests and lpm-nano.

        Identity normalisation: a VAE trained here gets its statistics measured afterwards.
        """
        return cls(
            base_dim=base_dim,
            num_res_blocks=1,
            latents_mean=(0.0,) * 16,
            latents_std=(1.0,) * 16,
        )

    def to_diffusers_kwargs(self) -> dict:
        return {
            "base_dim": self.base_dim,
            "z_dim": self.z_dim,
            "dim_mult": list(self.dim_mult),
            "num_res_blocks": self.num_res_blocks,
            "temperal_downsample": list(self.temperal_downsample),
            "latents_mean": list(self.latents_mean),
            "latents_std": list(self.latents_std),
        }


def build_wan_vae(config: WanVAEConfig) -> WanVAE:
    """Build a randomly initialised `WanVAE` from a config (no I/O)."""
    from diffusers import AutoencoderKLWan

    return WanVAE(AutoencoderKLWan(**config.to_diffusers_kwargs()))


class WanVAE(nn.Module):
    """Wan VAE with normalised latents: `encode` video → latents, `decode` latents → video.

    Holds the diffusers model as ``self.model`` (so ``self.model.save_pretrained(dir)`` writes a
    directory `load_wan_vae` reads back).
    """

    temporal_compression: int = 4
    spatial_compression: int = 8

    def __init__(self, model: AutoencoderKLWan) -> None:
        super().__init__()
        cfg = model.config
        if cfg.get("patch_size") is not None or cfg.get("is_residual", False):
            raise ValueError(
                "only the Wan2.1 VAE layout is supported (patch_size=None, is_residual=False); "
                "this config looks like the Wan2.2 VAE"
            )
        self.model = model
        mean = torch.tensor(cfg.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
        std = torch.tensor(cfg.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)
        # Not persistent: the statistics live in the diffusers config, not the state dict.
        self.register_buffer("latents_mean", mean, persistent=False)
        self.register_buffer("latents_std", std, persistent=False)

    @property
    def z_dim(self) -> int:
        return int(self.model.config.z_dim)

    @property
    def config(self) -> WanVAEConfig:
        c = self.model.config
        return WanVAEConfig(
            base_dim=c.base_dim,
            z_dim=c.z_dim,
            dim_mult=tuple(c.dim_mult),
            num_res_blocks=c.num_res_blocks,
            temperal_downsample=tuple(c.temperal_downsample),
            latents_mean=tuple(c.latents_mean),
            latents_std=tuple(c.latents_std),
        )

    @staticmethod
    def latent_frames(num_frames: int) -> int:
        """Latent frames F for T video frames: F = 1 + (T - 1) // 4."""
        if num_frames < 1:
            raise ValueError(f"num_frames must be >= 1, got {num_frames}")
        return 1 + (num_frames - 1) // 4

    @staticmethod
    def video_frames(num_latent_frames: int) -> int:
        """Video frames T decoded from F latent frames of a clip start: T = 1 + 4 (F - 1)."""
        return 1 + 4 * (num_latent_frames - 1)

    def normalize(self, raw_bcfhw: torch.Tensor) -> torch.Tensor:
        mean = self.latents_mean.to(raw_bcfhw)
        std = self.latents_std.to(raw_bcfhw)
        return (raw_bcfhw - mean) / std

    def denormalize(self, latents_bcfhw: torch.Tensor) -> torch.Tensor:
        mean = self.latents_mean.to(latents_bcfhw)
        std = self.latents_std.to(latents_bcfhw)
        return latents_bcfhw * std + mean

    def encode(
        self, video_b3thw: torch.Tensor, *, sample: bool = False, generator=None
    ) -> torch.Tensor:
        """Encode video (B, 3, T, H, W) in [-1, 1] to normalised latents (B, C, F, h, w).

        ``sample=False`` takes the posterior mean (deterministic); ``sample=True`` draws from it.
        Frames beyond 1 + 4k are dropped by the encoder (it consumes 1 then 4 at a time).
        """
        _check_video(video_b3thw)
        posterior = self.model.encode(video_b3thw).latent_dist
        raw = posterior.sample(generator=generator) if sample else posterior.mode()
        return self.normalize(raw)

    def decode(self, latents_bcfhw: torch.Tensor) -> torch.Tensor:
        """Decode normalised latents (B, C, F, h, w) to video (B, 3, 1 + 4 (F - 1), 8h, 8w).

        Output is clamped to [-1, 1].
        """
        _check_latents(latents_bcfhw, self.z_dim)
        return self.model.decode(self.denormalize(latents_bcfhw)).sample

    def streaming_decoder(self) -> StreamingVAEDecoder:
        """A fresh chunk-by-chunk decoder sharing this VAE's weights."""
        return StreamingVAEDecoder(self)


@dataclass
class _DecoderCache:
    feat_map: list = field(default_factory=list)
    frames_seen: int = 0


class StreamingVAEDecoder:
    """Causal chunk-by-chunk decoding of normalised latents with a carried feature cache.

    Decoding chunks F1, F2, ... in order gives exactly the frames of `WanVAE.decode` on their
    concatenation: the first latent frame of the stream yields 1 video frame, every later latent
    frame yields 4. The cache is private to this object, so several streams can share one VAE.
    """

    def __init__(self, vae: WanVAE) -> None:
        self.vae = vae
        self._num_convs = vae.model._cached_conv_counts["decoder"]
        self._cache = _DecoderCache()
        self.reset()

    def reset(self) -> None:
        """Forget the stream: the next chunk is decoded as the start of a clip."""
        self._cache = _DecoderCache(feat_map=[None] * self._num_convs, frames_seen=0)

    @property
    def latent_frames_seen(self) -> int:
        return self._cache.frames_seen

    @torch.no_grad()
    def decode_chunk(self, latents_bcfhw: torch.Tensor) -> torch.Tensor:
        """Decode the next normalised latent chunk (B, C, F, h, w) to frames (B, 3, T, 8h, 8w).

        Inference only (runs without gradients).

        T = 4F, or 1 + 4 (F - 1) for the stream's first chunk. Values in [-1, 1].
        """
        _check_latents(latents_bcfhw, self.vae.z_dim)
        model = self.vae.model
        x = model.post_quant_conv(self.vae.denormalize(latents_bcfhw))
        outs = []
        for i in range(x.shape[2]):
            # Each call must start at the first cached convolution.
            conv_idx = [0]
            outs.append(
                model.decoder(
                    x[:, :, i : i + 1],
                    feat_cache=self._cache.feat_map,
                    feat_idx=conv_idx,
                    first_chunk=self._cache.frames_seen == 0,
                )
            )
            self._cache.frames_seen += 1
        return torch.clamp(torch.cat(outs, dim=2), min=-1.0, max=1.0)


def load_wan_vae(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> WanVAE:
    """Load a Wan2.1 VAE from a local diffusers-layout directory (see the module docstring).

    Never contacts a model hub. Raises `FileNotFoundError` naming what is missing.
    """
    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"Wan VAE directory {root} does not exist; pass the local folder that holds the "
            "VAE's config.json and diffusion_pytorch_model.safetensors"
        )
    if not (root / "config.json").is_file() and (root / "vae" / "config.json").is_file():
        root = root / "vae"
    config_path = root / "config.json"
    if not config_path.is_file():
        raise FileNotFoundError(
            f"no config.json in {root}: expected a diffusers AutoencoderKLWan folder "
            "(config.json + diffusion_pytorch_model.safetensors)"
        )
    try:
        class_name = json.loads(config_path.read_text()).get("_class_name")
    except json.JSONDecodeError as exc:
        raise ValueError(f"{config_path} is not valid JSON: {exc}") from exc
    if class_name not in (None, "AutoencoderKLWan"):
        raise ValueError(f"{config_path} describes a {class_name}, not an AutoencoderKLWan")
    if not any(root.glob("*.safetensors")) and not any(root.glob("*.bin")):
        raise FileNotFoundError(
            f"no weights in {root}: expected diffusion_pytorch_model.safetensors (or a sharded "
            "set with its index) next to config.json"
        )
    from diffusers import AutoencoderKLWan

    model = AutoencoderKLWan.from_pretrained(root, local_files_only=True, torch_dtype=dtype)
    return WanVAE(model.eval()).to(device)


def _check_video(video: torch.Tensor) -> None:
    if video.ndim != 5 or video.shape[1] != 3:
        raise ValueError(f"video must be (B, 3, T, H, W), got {tuple(video.shape)}")
    if video.shape[-1] % 8 or video.shape[-2] % 8:
        raise ValueError(f"video height and width must be multiples of 8, got {video.shape[-2:]}")


def _check_latents(latents: torch.Tensor, z_dim: int) -> None:
    if latents.ndim != 5 or latents.shape[1] != z_dim:
        raise ValueError(f"latents must be (B, {z_dim}, F, h, w), got {tuple(latents.shape)}")
