"""A light streaming decoder: Wan latents → frames with plain convolutions (~0.3M parameters).

Meant to be distilled from the Wan VAE decoder (`distillation_loss`) so that real-time streaming
on a CPU does not pay for the VAE's 3D-conv cache loop.

Shape legend
    B  batch
    C  latent channels (16)
    F  latent frames
    h, w  latent height / width
    T  output frames: T = 4 F (every latent frame expands to 4 frames)
    H, W  output height / width: 8h, 8w

Pipeline per latent frame: a causal temporal conv (kernel 2 over latent frames: the current
frame and the previous one) expands channels 4x; the expansion is split into 4 frames; each frame
runs through a 2D upsampling decoder (three 2x nearest-upsample stages); output is tanh in
[-1, 1].

Alignment with the Wan VAE: the VAE decodes a clip's first latent frame to 1 frame, not 4. To
compare with it, drop the first 3 output frames of a stream's first chunk (`trim_to_vae`).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["LightDecoder", "LightDecoderConfig", "distillation_loss", "trim_to_vae"]

SILENCE_LOG_MEL = -11.512925464970229
"""ln(1e-5): every log-mel value of silence (`LogMelConfig.log_floor`)."""


@dataclass(kw_only=True)
class LightDecoderConfig:
    """Widths of the light decoder."""

    z_dim: int = 16
    """Latent channels C."""
    frame_dim: int = 64
    """Channels per output frame after the temporal expansion (at latent resolution)."""
    stage_dims: tuple[int, int, int] = (128, 64, 32)
    """Channels of the three upsampling stages (at 2x, 4x, 8x the latent resolution)."""
    temporal_upsample: int = 4
    """Frames per latent frame (Wan: 4)."""
    out_channels: int = 3
    """Output channels (RGB)."""
    stage_blocks: int = 0
    """Residual blocks after each upsampling stage (0: one convolution per stage)."""
    norm_groups: int = 0
    """GroupNorm groups inside the residual blocks (0: no normalisation)."""
    speech_dim: int = 0
    """Width of the per-frame features of the performer's own speech that modulate the frames
    (lpm-nano: 320, its log-mel frames, `lpm.models.audio.LogMelFeatures`); 0: no speech path.
    A 64-px face keeps its mouth in about one latent cell, and a latent holds 4 frames, so the
    latents alone cannot carry syllable-rate mouth motion (docs/encoders.md)."""
    speech_past: int = 4
    """Frames of speech before each output frame that the speech path reads."""
    speech_ahead: int = 4
    """Frames of speech after each output frame that the speech path reads (a mouth opens
    before its sound)."""
    speech_hidden: int = 96
    """Width of the speech path."""
    speech_stages: int = 1
    """Upsampling stages (1-3, from the coarsest) whose features the speech also modulates,
    besides the latent-resolution ones. At 64 px the mouth spans about 4 px of the 32-px
    stage, where a finer stage can shape it."""
    speech_mouth: int = 0
    """Outputs of an auxiliary head on the speech path (2: the mouth's opening and rounding per
    frame; 0: none). Training fits it to labelled mouths so that the path learns the mouth from
    the sound; the frames never read it (`LightDecoder.speech_mouth`)."""

    def __post_init__(self) -> None:
        if self.speech_dim < 0 or self.speech_past < 0 or self.speech_ahead < 0:
            raise ValueError("speech_dim, speech_past and speech_ahead must be >= 0")
        if self.speech_dim and self.speech_hidden < 1:
            raise ValueError(f"speech_hidden must be >= 1, got {self.speech_hidden}")
        if not 1 <= self.speech_stages <= 3 or self.speech_mouth < 0:
            raise ValueError(
                f"speech_stages must be 1-3 and speech_mouth >= 0, got {self.speech_stages} "
                f"and {self.speech_mouth}"
            )
        if self.z_dim < 1:
            raise ValueError(f"z_dim must be >= 1, got {self.z_dim}")
        if self.frame_dim < 1:
            raise ValueError(f"frame_dim must be >= 1, got {self.frame_dim}")
        if len(self.stage_dims) != 3 or min(self.stage_dims) < 1:
            raise ValueError(f"stage_dims must be 3 positive widths, got {self.stage_dims}")
        if self.temporal_upsample < 1:
            raise ValueError(f"temporal_upsample must be >= 1, got {self.temporal_upsample}")
        if self.out_channels < 1:
            raise ValueError(f"out_channels must be >= 1, got {self.out_channels}")
        if self.stage_blocks < 0:
            raise ValueError(f"stage_blocks must be >= 0, got {self.stage_blocks}")
        widths = (self.frame_dim, *self.stage_dims)
        if self.norm_groups < 0 or (self.norm_groups and any(w % self.norm_groups for w in widths)):
            raise ValueError(f"norm_groups={self.norm_groups} must be 0 or divide {widths}")


class _ResBlock2d(nn.Module):
    """Two 3x3 convolutions with a skip; GroupNorm before each activation when ``groups``."""

    def __init__(self, dim: int, groups: int = 0) -> None:
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, dim) if groups else nn.Identity()
        self.conv1 = nn.Conv2d(dim, dim, 3, padding=1)
        self.norm2 = nn.GroupNorm(groups, dim) if groups else nn.Identity()
        self.conv2 = nn.Conv2d(dim, dim, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.norm2(self.conv1(F.silu(self.norm1(x))))))


class LightDecoder(nn.Module):
    """Latents (B, C, F, h, w) → frames (B, 3, 4F, 8h, 8w) in [-1, 1]."""

    def __init__(self, config: LightDecoderConfig | None = None) -> None:
        super().__init__()
        self.config = cfg = config or LightDecoderConfig()
        r = cfg.temporal_upsample
        # Kernel (2, 3, 3) over (latent time, h, w): causal in time, sees the previous latent.
        self.time_conv = nn.Conv3d(cfg.z_dim, cfg.frame_dim * r, kernel_size=(2, 3, 3))
        self.res_in = _ResBlock2d(cfg.frame_dim, cfg.norm_groups)
        stages = []
        in_dim = cfg.frame_dim
        for dim in cfg.stage_dims:
            stages.append(nn.Conv2d(in_dim, dim, 3, padding=1))
            in_dim = dim
        self.stages = nn.ModuleList(stages)
        self.stage_res = nn.ModuleList(
            nn.Sequential(*(_ResBlock2d(dim, cfg.norm_groups) for _ in range(cfg.stage_blocks)))
            for dim in cfg.stage_dims
        )
        self.conv_out = nn.Conv2d(in_dim, cfg.out_channels, 3, padding=1)
        if cfg.speech_dim:
            hid, span = cfg.speech_hidden, cfg.speech_past + 1 + cfg.speech_ahead
            self.speech_in = nn.Linear(cfg.speech_dim, hid)
            self.speech_conv = nn.Conv1d(hid, hid, span)
            # Scale and shift of the latent-resolution features and of the first stage's; both
            # start at zero, so an added speech path leaves a trained decoder's frames as they are.
            self.speech_film = nn.Linear(hid, 2 * cfg.frame_dim)
            self.speech_film_stage = nn.Linear(hid, 2 * cfg.stage_dims[0])
            films = [self.speech_film, self.speech_film_stage]
            for i in range(1, cfg.speech_stages):  # speech_film_stage1, speech_film_stage2
                films.append(nn.Linear(hid, 2 * cfg.stage_dims[i]))
                self.add_module(f"speech_film_stage{i}", films[-1])
            for layer in films:
                nn.init.zeros_(layer.weight)
                nn.init.zeros_(layer.bias)
            if cfg.speech_mouth:
                self.speech_mouth_head = nn.Linear(hid, cfg.speech_mouth)

    @property
    def speech_context(self) -> tuple[int, int]:
        """(past, ahead): the frames of speech beyond the output frames that `forward` reads."""
        return self.config.speech_past, self.config.speech_ahead

    def _speech(self, speech_btd: torch.Tensor | None, b: int, t: int, like: torch.Tensor):
        """(B*T, hidden) per output frame from (B, past + T + ahead, speech_dim) features."""
        cfg = self.config
        past, ahead = self.speech_context
        want = (b, past + t + ahead, cfg.speech_dim)
        if speech_btd is None:  # no own speech: the log-mel floor of silence
            speech_btd = like.new_full(want, SILENCE_LOG_MEL)
        if tuple(speech_btd.shape) != want:
            raise ValueError(
                f"speech must be (B, past + T + ahead, D) = {want} for {t} output frames "
                f"(past {past}, ahead {ahead}), got {tuple(speech_btd.shape)}"
            )
        x = F.silu(self.speech_in(speech_btd.to(like) / 5.0 + 1.0))  # log-mel ~[-11.5, 5]
        x = F.silu(self.speech_conv(x.transpose(1, 2))).transpose(1, 2)  # (B, T, hidden)
        return x.reshape(b * t, -1)

    def _stage_film(self, i: int):
        """The speech FiLM of upsampling stage ``i``, or None where the speech leaves it."""
        if not self.config.speech_dim or i >= self.config.speech_stages:
            return None
        return self.speech_film_stage if i == 0 else getattr(self, f"speech_film_stage{i}")

    def speech_mouth(self, speech_btd: torch.Tensor, t: int) -> torch.Tensor:
        """The auxiliary head's mouth (B, T, speech_mouth) for T output frames from the speech
        window `forward` reads for them (B, past + T + ahead, speech_dim)."""
        if not self.config.speech_mouth:
            raise ValueError("this decoder has no mouth head (LightDecoderConfig.speech_mouth=0)")
        b = speech_btd.shape[0]
        s = self._speech(speech_btd, b, t, self.speech_mouth_head.weight)
        return self.speech_mouth_head(s).view(b, t, -1)

    def forward(
        self,
        latents_bcfhw: torch.Tensor,
        history_bc1hw: torch.Tensor | None = None,
        speech_btd: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Decode latents (B, C, F, h, w) to frames (B, 3, 4F, 8h, 8w).

        ``history_bc1hw`` is the latent frame just before this chunk (streaming: pass
        ``prev_chunk[:, :, -1:]``); None at a stream start, where the first latent frame is
        repeated instead. Decoding chunks with their history equals decoding the whole clip.

        ``speech_btd`` (B, past + 4F + ahead, speech_dim): with a speech path, the performer's
        own speech features of the output frames and `speech_context` frames around them;
        None means silence. Ignored without a speech path.
        """
        cfg = self.config
        if latents_bcfhw.ndim != 5 or latents_bcfhw.shape[1] != cfg.z_dim:
            raise ValueError(
                f"latents must be (B, {cfg.z_dim}, F, h, w), got {tuple(latents_bcfhw.shape)}"
            )
        b, _, f, h, w = latents_bcfhw.shape
        if history_bc1hw is None:
            history_bc1hw = latents_bcfhw[:, :, :1]
        x = torch.cat([history_bc1hw.to(latents_bcfhw), latents_bcfhw], dim=2)
        x = self.time_conv(F.pad(x, (1, 1, 1, 1, 0, 0), mode="replicate"))  # (B, D*r, F, h, w)
        r = cfg.temporal_upsample
        # (B, D*r, F, h, w) → (B*F*r, D, h, w): the r sub-frames become separate images.
        x = x.view(b, r, cfg.frame_dim, f, h, w).permute(0, 3, 1, 2, 4, 5)
        x = x.reshape(b * f * r, cfg.frame_dim, h, w)
        s = None
        if cfg.speech_dim:
            s = self._speech(speech_btd, b, f * r, x)
            scale, shift = self.speech_film(s)[:, :, None, None].chunk(2, dim=1)
            x = x * (1 + scale) + shift
        x = self.res_in(x)
        for i, (conv, res) in enumerate(zip(self.stages, self.stage_res, strict=True)):
            x = conv(F.interpolate(F.silu(x), scale_factor=2.0, mode="nearest"))
            film = self._stage_film(i)
            if film is not None:
                scale, shift = film(s)[:, :, None, None].chunk(2, dim=1)
                x = x * (1 + scale) + shift
            x = res(x)
        x = torch.tanh(self.conv_out(F.silu(x)))  # (B*F*r, 3, 8h, 8w)
        x = x.view(b, f * r, cfg.out_channels, 8 * h, 8 * w)
        return x.permute(0, 2, 1, 3, 4).contiguous()


def trim_to_vae(frames_b3thw: torch.Tensor, temporal_upsample: int = 4) -> torch.Tensor:
    """Drop the first (r - 1) frames of a stream's first chunk so T matches 1 + 4 (F - 1)."""
    return frames_b3thw[:, :, temporal_upsample - 1 :]


def _image_gradients(x_bcthw: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    dx = x_bcthw[..., :, 1:] - x_bcthw[..., :, :-1]
    dy = x_bcthw[..., 1:, :] - x_bcthw[..., :-1, :]
    dt = x_bcthw[:, :, 1:] - x_bcthw[:, :, :-1]
    return dx, dy, dt


def distillation_loss(
    pred_b3thw: torch.Tensor,
    target_b3thw: torch.Tensor,
    *,
    gradient_weight: float = 0.5,
    temporal_weight: float = 0.5,
) -> tuple[torch.Tensor, dict[str, float]]:
    """L1 on pixels + L1 on spatial and temporal finite differences (edges and flicker).

    Both inputs are frames (B, 3, T, H, W) in [-1, 1] with equal shapes (trim the student's
    output with `trim_to_vae` first when the target starts a clip). Returns the scalar loss and
    a dict of its parts (floats, for logging).
    """
    if pred_b3thw.shape != target_b3thw.shape:
        raise ValueError(
            f"pred {tuple(pred_b3thw.shape)} and target {tuple(target_b3thw.shape)} differ"
        )
    l1 = (pred_b3thw - target_b3thw).abs().mean()
    pdx, pdy, pdt = _image_gradients(pred_b3thw)
    tdx, tdy, tdt = _image_gradients(target_b3thw)
    grad = 0.5 * ((pdx - tdx).abs().mean() + (pdy - tdy).abs().mean())
    temporal = (pdt - tdt).abs().mean() if pred_b3thw.shape[2] > 1 else l1.new_zeros(())
    loss = l1 + gradient_weight * grad + temporal_weight * temporal
    parts = {"l1": l1.item(), "gradient": grad.item(), "temporal": temporal.item()}
    return loss, parts
