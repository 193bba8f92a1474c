"""The lpm-nano video autoencoder: Wan's latent layout (16 channels, 4x8x8) from 2D convolutions.

Why not a tiny `AutoencoderKLWan` (docs/encoders.md, LOG.md): on 2 CPU cores the tiny Wan VAE
reached only blurry stills (L1 0.085) after 2,500 steps and drifted to noise past the clip
lengths it was trained on. This autoencoder keeps the interface and the latent geometry the
DiT sees, so the rest of the system cannot tell them apart, and trains in minutes.

Shape legend: B batch, C latent channels, F latent frames, h/w latent grid (H/8, W/8),
T = 1 + 4 (F - 1) video frames (Wan's clip alignment: the first latent is the first frame alone).

Encoding: every latent frame sees its own group of 4 video frames stacked as 12 channels
(latent 0: the first frame repeated 4 times) through a 2D conv encoder with three stride-2
stages. Decoding: the `LightDecoder` (a causal temporal conv over latents, then a 2D upsampling
decoder per frame), trimmed to T frames. Groups are encoded independently and decoding is causal
with one latent of history, so chunk-by-chunk decoding equals whole-clip decoding exactly.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from lpm.models.vae.light_decoder import (
    SILENCE_LOG_MEL,
    LightDecoder,
    LightDecoderConfig,
    _ResBlock2d,
    trim_to_vae,
)
from lpm.models.vae.wan import WanVAE, _check_latents, _check_video

NANO_VAE_CLASS = "LPMNanoVAE"


@dataclass(kw_only=True)
class NanoVAEConfig:
    """Geometry and latent statistics of the nano autoencoder."""

    z_dim: int = 16
    enc_dims: tuple[int, int, int] = (48, 96, 128)
    """Channels of the three stride-2 encoder stages."""
    enc_blocks: int = 1
    """Residual blocks per encoder stage."""
    norm_groups: int = 0
    """GroupNorm groups in the encoder's residual blocks (0: none; the decoder has its own)."""
    decoder: LightDecoderConfig = field(default_factory=LightDecoderConfig)
    latents_mean: tuple[float, ...] = (0.0,) * 16
    latents_std: tuple[float, ...] = (1.0,) * 16

    def __post_init__(self) -> None:
        if isinstance(self.decoder, dict):
            dec = dict(self.decoder)
            dec["stage_dims"] = tuple(dec.get("stage_dims", (128, 64, 32)))
            self.decoder = LightDecoderConfig(**dec)
        self.enc_dims = tuple(self.enc_dims)
        self.latents_mean, self.latents_std = tuple(self.latents_mean), tuple(self.latents_std)
        if len(self.enc_dims) != 3 or min(self.enc_dims) < 1:
            raise ValueError(f"enc_dims must be 3 positive widths, got {self.enc_dims}")
        if self.enc_blocks < 1:
            raise ValueError(f"enc_blocks must be >= 1, got {self.enc_blocks}")
        if self.norm_groups < 0 or (
            self.norm_groups and any(d % self.norm_groups for d in self.enc_dims)
        ):
            raise ValueError(f"norm_groups={self.norm_groups} must be 0 or divide {self.enc_dims}")
        if self.decoder.z_dim != self.z_dim:
            raise ValueError("decoder.z_dim must equal z_dim")
        if len(self.latents_mean) != self.z_dim or len(self.latents_std) != self.z_dim:
            raise ValueError("latents_mean and latents_std need z_dim entries")

    def to_dict(self) -> dict:
        return {"_class_name": NANO_VAE_CLASS, **asdict(self)}


class NanoEncoder(nn.Module):
    """(N, 12, H, W) groups of 4 frames → (N, C, H/8, W/8) raw latents."""

    def __init__(self, cfg: NanoVAEConfig) -> None:
        super().__init__()
        d0, d1, d2 = cfg.enc_dims
        self.conv_in = nn.Conv2d(12, d0, 3, padding=1)
        self.down = nn.ModuleList(
            [nn.Conv2d(a, b, 4, stride=2, padding=1) for a, b in ((d0, d0), (d0, d1), (d1, d2))]
        )
        g = cfg.norm_groups
        self.res = nn.ModuleList([_ResBlock2d(d, g) for d in (d0, d1, d2)])
        self.res_extra = nn.ModuleList(
            nn.Sequential(*(_ResBlock2d(d, g) for _ in range(cfg.enc_blocks - 1)))
            for d in (d0, d1, d2)
        )
        self.conv_out = nn.Conv2d(d2, cfg.z_dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv_in(x)
        for down, res, extra in zip(self.down, self.res, self.res_extra, strict=True):
            x = extra(res(down(F.silu(x))))
        return self.conv_out(F.silu(x))


class NanoVAE(nn.Module):
    """Video (B, 3, T, H, W) in [-1, 1] ↔ normalised latents (B, C, F, H/8, W/8)."""

    temporal_compression: int = 4
    spatial_compression: int = 8

    def __init__(self, config: NanoVAEConfig | None = None) -> None:
        super().__init__()
        self._config = cfg = config or NanoVAEConfig()
        self.encoder = NanoEncoder(cfg)
        self.decoder = LightDecoder(cfg.decoder)
        self.register_buffer("latents_mean", torch.tensor(cfg.latents_mean).view(1, -1, 1, 1, 1),
                             persistent=False)  # fmt: skip
        self.register_buffer("latents_std", torch.tensor(cfg.latents_std).view(1, -1, 1, 1, 1),
                             persistent=False)  # fmt: skip

    @property
    def config(self) -> NanoVAEConfig:
        return self._config

    @property
    def z_dim(self) -> int:
        return self._config.z_dim

    # Wan's clip alignment: F = 1 + (T - 1) // 4 and T = 1 + 4 (F - 1).
    latent_frames = staticmethod(WanVAE.latent_frames)
    video_frames = staticmethod(WanVAE.video_frames)

    def with_statistics(self, mean: list[float], std: list[float]) -> NanoVAE:
        """The same weights with new latent statistics."""
        cfg = NanoVAEConfig(**{**asdict(self._config), "latents_mean": tuple(mean),
                               "latents_std": tuple(std)})  # fmt: skip
        new = NanoVAE(cfg)
        new.load_state_dict(self.state_dict())
        return new.train(self.training)

    def encode_raw(self, video_b3thw: torch.Tensor) -> torch.Tensor:
        """Unnormalised latents (B, C, F, h, w); frames beyond 1 + 4k are dropped."""
        _check_video(video_b3thw)
        b, _, t, hh, ww = video_b3thw.shape
        f = self.latent_frames(t)
        first = video_b3thw[:, :, :1].expand(-1, -1, 4, -1, -1)
        frames = torch.cat([first, video_b3thw[:, :, 1 : 1 + 4 * (f - 1)]], dim=2)
        groups = frames.reshape(b, 3, f, 4, hh, ww).permute(0, 2, 3, 1, 4, 5)
        z = self.encoder(groups.reshape(b * f, 12, hh, ww))
        return z.view(b, f, self.z_dim, hh // 8, ww // 8).transpose(1, 2)

    def encode(self, video_b3thw: torch.Tensor, *, sample: bool = False, generator=None):
        """Normalised latents (B, C, F, h, w) (deterministic; ``sample`` is accepted for parity
        with `WanVAE` and ignored)."""
        raw = self.encode_raw(video_b3thw)
        return (raw - self.latents_mean.to(raw)) / self.latents_std.to(raw)

    @property
    def speech_dim(self) -> int:
        """Width of the speech features the decoder reads (0: it reads none)."""
        return self._config.decoder.speech_dim

    def speech_window(self, speech_btd: torch.Tensor | None, frames: int) -> torch.Tensor | None:
        """Speech features of ``frames`` output frames with the decoder's context around them.

        ``speech_btd`` is (B, frames, D) — then the context is silence, as at the ends of a
        whole clip — or already (B, past + frames + ahead, D). None stays None (silence).
        """
        if speech_btd is None or not self.speech_dim:
            return None
        past, ahead = self.decoder.speech_context
        if speech_btd.ndim == 3 and speech_btd.shape[1] == frames and past + ahead:
            b, _, d = speech_btd.shape
            pad = lambda n: speech_btd.new_full((b, n, d), SILENCE_LOG_MEL)  # noqa: E731
            speech_btd = torch.cat([pad(past), speech_btd, pad(ahead)], dim=1)
        return speech_btd

    def decode_raw(self, raw_bcfhw: torch.Tensor, history=None, speech=None) -> torch.Tensor:
        """All 4F frames of raw latents (the stream form, see `LightDecoder`)."""
        return self.decoder(raw_bcfhw, history, self.speech_window(speech, 4 * raw_bcfhw.shape[2]))

    def decode(self, latents_bcfhw: torch.Tensor, speech: torch.Tensor | None = None):
        """Video (B, 3, 1 + 4 (F - 1), 8h, 8w) in [-1, 1] from normalised latents.

        ``speech`` (B, 4F, D): the performer's own speech features of the 4F frames the latents
        cover (the first latent's 4 frames included, as the pipeline counts them), or with the
        decoder's context around them (`speech_window`); None is silence. Ignored by a decoder
        without a speech path.
        """
        _check_latents(latents_bcfhw, self.z_dim)
        return trim_to_vae(self.decode_raw(self._denormalize(latents_bcfhw), speech=speech))

    def _denormalize(self, latents: torch.Tensor) -> torch.Tensor:
        return latents * self.latents_std.to(latents) + self.latents_mean.to(latents)

    def streaming_decoder(self) -> NanoStreamingDecoder:
        return NanoStreamingDecoder(self)

    # ---- files: config.json + model.safetensors -------------------------------------------
    def save(self, directory: str | Path, *, half: bool = False) -> None:
        """Write ``config.json`` (marked with the class name) and ``model.safetensors``."""
        import json

        from safetensors.torch import save_file

        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "config.json").write_text(json.dumps(self._config.to_dict(), indent=2))
        state = {k: (v.half() if half else v).contiguous() for k, v in self.state_dict().items()}
        save_file(state, str(directory / "model.safetensors"))


class NanoStreamingDecoder:
    """Chunk-by-chunk decoding with one latent of history; equals `NanoVAE.decode` exactly.

    With a speech path it also keeps the last ``speech_past`` frames of speech; the frames
    after a chunk are those given as ``ahead`` and, where none are given, the chunk's last
    frame repeated (a live stream does not know them yet), so only a chunk's last
    ``speech_ahead`` frames can differ from whole-clip decoding.
    """

    def __init__(self, vae: NanoVAE) -> None:
        self.vae = vae
        self.reset()

    def reset(self) -> None:
        self._history: torch.Tensor | None = None
        self._speech: torch.Tensor | None = None
        self._seen = 0

    def _speech_window(self, speech, ahead, frames: int) -> torch.Tensor | None:
        if not self.vae.speech_dim or speech is None:
            self._speech = None
            return None
        past, n_ahead = self.vae.decoder.speech_context
        if speech.shape[1] != frames:
            raise ValueError(
                f"speech must cover the chunk's {frames} frames, got {speech.shape[1]}"
            )
        b, _, d = speech.shape
        hist = self._speech
        if hist is None:
            hist = speech.new_full((b, past, d), SILENCE_LOG_MEL)
        ahead = speech[:, :0] if ahead is None else ahead[:, :n_ahead]
        fill = speech[:, -1:].expand(-1, n_ahead - ahead.shape[1], -1)
        window = torch.cat([hist, speech, ahead, fill], dim=1)
        kept = torch.cat([hist, speech], dim=1)
        self._speech = kept[:, kept.shape[1] - past :]
        return window

    @property
    def latent_frames_seen(self) -> int:
        return self._seen

    @torch.no_grad()
    def decode_chunk(
        self,
        latents_bcfhw: torch.Tensor,
        speech: torch.Tensor | None = None,
        ahead: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """T = 4F frames, or 1 + 4 (F - 1) for the stream's first chunk.

        ``speech`` (B, 4F, D): the performer's own speech features of the chunk's 4F frames
        (None: silence); ``ahead`` (B, <= speech_ahead, D): those of the frames after it, where
        known.
        """
        _check_latents(latents_bcfhw, self.vae.z_dim)
        raw = self.vae._denormalize(latents_bcfhw)
        window = self._speech_window(speech, ahead, 4 * raw.shape[2])
        out = self.vae.decode_raw(raw, self._history, window)
        if self._seen == 0:
            out = trim_to_vae(out)
        self._history = raw[:, :, -1:]
        self._seen += raw.shape[2]
        return out


def is_nano_vae_dir(path: str | Path) -> bool:
    import json

    cfg = Path(path) / "config.json"
    try:
        return json.loads(cfg.read_text()).get("_class_name") == NANO_VAE_CLASS
    except (OSError, ValueError):
        return False


def load_nano_vae(path: str | Path, *, device: str | torch.device = "cpu") -> NanoVAE:
    """Load a `NanoVAE` directory (config.json + model.safetensors) in fp32."""
    import json

    from safetensors.torch import load_file

    path = Path(path)
    if not is_nano_vae_dir(path):
        raise FileNotFoundError(f"{path} holds no nano VAE (config.json with {NANO_VAE_CLASS!r})")
    data = json.loads((path / "config.json").read_text())
    data.pop("_class_name")
    vae = NanoVAE(NanoVAEConfig(**data))
    weights = path / "model.safetensors"
    if not weights.is_file():
        raise FileNotFoundError(f"{weights} is missing")
    vae.load_state_dict({k: v.float() for k, v in load_file(weights).items()}, strict=True)
    return vae.to(device).eval()
