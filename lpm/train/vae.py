"""Training the nano video VAE and its light streaming decoder on Stage clips.

Legend: B batch, T = 1 + 4k video frames, F = 1 + k latent frames, S frame size in pixels.

1. `train_vae`: a tiny `AutoencoderKLWan` (Wan's 16-channel 4x8x8 layout) learns to reconstruct
   Stage frames rendered on the fly (L1 + image-gradient L1 + a small KL on the posterior mean).
   It first learns still images (random poses, expressions and mouths of training identities:
   one latent frame each, so a step sees many faces cheaply), then whole clips, which train
   the temporal (causal) part. Being fully convolutional, it runs at any size later.
2. `latent_statistics`: per-channel mean/std of its latents over fresh clips, written into the
   VAE config so the DiT sees roughly unit-variance latents (as Wan2.1 ships its own).
3. `train_light_decoder`: the light decoder learns to reproduce the VAE decoder's frames from
   the same latents (distillation), for real-time streaming.
Every step's clips are a function of (seed, step), so runs are reproducible.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
from torch.nn import functional as F

from lpm.device import resolve_device
from lpm.models.serialization import save_module
from lpm.models.vae import (
    LightDecoder,
    LightDecoderConfig,
    NanoVAE,
    WanVAE,
    WanVAEConfig,
    build_wan_vae,
    distillation_loss,
    trim_to_vae,
)
from lpm.models.vae.nano import NANO_VAE_CLASS

log = logging.getLogger(__name__)
SPEECH_DIM = 320
"""Width of lpm-nano's speech features: 4 log-mel frames of 80 bands per video frame."""
ProgressFn = Callable[[int, int, dict], None]


@dataclass(kw_only=True)
class VaeRecipe:
    """Settings of the nano VAE + light decoder training."""

    kind: str = "nano"
    """``nano``: the `NanoVAE` lpm-nano ships (clip steps only; its decoder is already light,
    so no light decoder is distilled); ``wan``: a tiny `AutoencoderKLWan` (image then clip
    steps, then the light decoder)."""
    base_dim: int = 16
    """Width of the tiny Wan VAE's first stage."""
    size: int = 64
    """Training frame size in pixels (the VAE is convolutional: it runs at any size later)."""
    frames: int = 9
    """Video frames per training clip (1 + 4k)."""
    batch_size: int = 4
    image_steps: int = 2500
    """Steps on still images before the clip steps (``wan`` only)."""
    image_batch_size: int = 12
    """Still images per image step."""
    vae_steps: int = 1500
    """Steps on clips of ``frames`` frames."""
    decoder_steps: int = 1000
    lr: float = 1e-3
    kl_weight: float = 1e-4
    """Weight of the KL term (``wan``) or of the latent L2 term (``nano``): small, the latents
    only need to stay bounded, not Gaussian."""
    gradient_weight: float = 0.5
    """Weight of the image-gradient L1 term (keeps cartoon edges sharp)."""
    motion_weight: float = 0.0
    """Strength of the motion-weighted L1 (``nano``; `lpm.train.conditioning.motion_weights`):
    pixels that change within the clip (a speaking mouth, blinks) count more than the static
    background; 0 weighs all pixels equally."""
    z_dim: int = 16
    """Latent channels of a new `NanoVAE`. With an ``init`` of fewer channels the VAE is widened:
    the added channels' encoder outputs start small and random and the decoder's reading of them
    at zero, so training starts from ``init``'s exact reconstructions and the new channels learn
    what the old ones lose (with ``mouth_weight``, the mouth of each frame)."""
    enc_blocks: int = 1
    """Residual blocks per encoder stage of a new `NanoVAE`."""
    decoder_blocks: int = 0
    """Residual blocks after each upsampling stage of a new `NanoVAE`'s decoder."""
    norm_groups: int = 0
    """GroupNorm groups in a new `NanoVAE`'s residual blocks (0: none)."""
    init: str = ""
    """A `NanoVAE` directory to start from (``nano``). Its weights are loaded into the
    architecture above; residual blocks it lacks start as the identity (last convolution at
    zero), so training starts from its exact reconstructions. Empty: random initialisation."""
    freeze_encoder: bool = False
    """Train the decoder only (``nano`` with ``init``): the latents stay exactly those of
    ``init``, so a DiT trained on them keeps working with the new decoder."""
    temporal_weight: float = 0.0
    """Weight of an L1 on frame-to-frame differences (``nano``): penalises smearing the 4 frames
    of a latent into one, which is where a speaking mouth is lost."""
    mouth_weight: float = 0.0
    """Extra L1 weight inside each frame's mouth region (``nano``; Stage renders the frame's pose
    with the mouth shut and wide open, and the pixels that differ are the mouth and jaw,
    `lpm.data.stage.render.mouth_region`): the region is ~5% of a 64-px frame, so with the
    plain L1 the latent and decoder spend almost nothing on it. Open or shut, every frame's
    mouth counts (1 + ``mouth_weight``) times as much."""
    eye_weight: float = 0.0
    """Extra L1 weight inside each frame's eyes (``nano``; the pixels that differ between the
    frame's pose with the eyes open and shut, `lpm.data.stage.render.eye_region`). The eyes are
    ~3% of a 64-px frame and, on a dark face, close to its colour, so a plain L1 lets them fade;
    without them a turned or shaking head reads as a still one."""
    speech: bool = False
    """Give a ``nano`` decoder the speech path (`LightDecoderConfig.speech_dim`: the log-mel
    frames of the performer's own speech) and train on clips with espeak speech, as the
    datasets have. With ``init`` and ``freeze_encoder`` the latents stay those a DiT was trained
    on, so only the decoder changes."""
    latent_noise: float = 0.0
    """Std of Gaussian noise added to the (normalised) latents before decoding (``nano``): the
    decoder then meets latents as imperfect as a DiT's and leans on what else it reads (the
    speech path) for what the noise blurs."""
    latent_blur: float = 0.0
    """Largest weight of a temporal blur of the latents before decoding (``nano``; each clip
    draws its weight from U(0, latent_blur)): each latent frame is mixed with its neighbours'
    (1-2-1), which keeps the slow head and body but smears a latent's mouth over its
    neighbours, so a decoder with a speech path learns to draw the mouth from the speech."""
    latent_shift: float = 0.0
    """Probability that a clip's latents are shifted one latent frame early or late against its
    video and speech before decoding (``nano``; edges held): a DiT's mouth is often off by as
    much, and a decoder with a speech path learns to take the timing from the speech."""
    speech_stages: int = 1
    """Upsampling stages the speech modulates (`LightDecoderConfig.speech_stages`)."""
    mouth_labels: float = 0.0
    """Weight of an auxiliary loss on the speech path (``speech``): a head on it predicts each
    frame's labelled mouth opening and rounding from the sound alone (mean squared error), so
    the path learns the mouth directly instead of only through the few mouth pixels' L1."""
    mouth_swap: float = 0.0
    """Probability that a clip's latents are encoded from its video re-rendered with its own
    mouth 2-8 frames early or late (``nano``; needs ``freeze_encoder``): the latents then show
    a mouth at the wrong time, as a DiT's often do, and only the speech says when it opens."""
    lr_schedule: str = "constant"
    """``constant`` after a 100-step warm-up, or ``cosine`` (decay to 0 over ``vae_steps``)."""
    stats_clips: int = 16
    """Clips used to measure the latent statistics."""
    device: str = "auto"
    """Where a ``nano`` VAE trains: ``auto`` (the first GPU where there is one, else the CPU;
    ``LPM_DEVICE`` overrides), ``cpu``, ``cuda``, ``cuda:1``. The clips render on the CPU."""
    workers: int = 0
    """Processes that render a ``nano`` VAE's training clips ahead of the steps (0: the
    training process renders each step's clips itself). A clip is a function of (seed, step),
    so the run is the same with any number of workers."""
    seed: int = 0

    def __post_init__(self) -> None:
        if self.kind not in ("nano", "wan"):
            raise ValueError(f"kind={self.kind!r} must be 'nano' or 'wan'")
        if (self.frames - 1) % 4 or self.frames < 1:
            raise ValueError(f"frames={self.frames} must be 1 + 4k")
        if self.size % 16:
            raise ValueError(f"size={self.size} must be a multiple of 16")
        for name in ("batch_size", "stats_clips", "image_batch_size"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1")
        if min(self.image_steps, self.vae_steps, self.decoder_steps) < 0:
            raise ValueError("image_steps, vae_steps and decoder_steps must be >= 0")
        if self.motion_weight < 0:
            raise ValueError(f"motion_weight={self.motion_weight} must be >= 0")
        if self.temporal_weight < 0:
            raise ValueError(f"temporal_weight={self.temporal_weight} must be >= 0")
        if self.latent_noise < 0:
            raise ValueError(f"latent_noise={self.latent_noise} must be >= 0")
        if not 0 <= self.latent_shift <= 1:
            raise ValueError(f"latent_shift={self.latent_shift} must be in [0, 1]")
        if not 0 <= self.latent_blur <= 1:
            raise ValueError(f"latent_blur={self.latent_blur} must be in [0, 1]")
        if self.mouth_weight < 0:
            raise ValueError(f"mouth_weight={self.mouth_weight} must be >= 0")
        if self.eye_weight < 0:
            raise ValueError(f"eye_weight={self.eye_weight} must be >= 0")
        if self.mouth_labels < 0 or (self.mouth_labels and not self.speech):
            raise ValueError(f"mouth_labels={self.mouth_labels} must be >= 0 and needs speech=true")
        if not 0 <= self.mouth_swap <= 1 or (self.mouth_swap and not self.freeze_encoder):
            raise ValueError(
                f"mouth_swap={self.mouth_swap} must be in [0, 1] and needs freeze_encoder=true "
                "(the encoder must not learn the wrong mouths)"
            )
        if self.lr_schedule not in ("constant", "cosine"):
            raise ValueError(f"lr_schedule={self.lr_schedule!r} must be 'constant' or 'cosine'")
        if self.z_dim < 1:
            raise ValueError(f"z_dim={self.z_dim} must be >= 1")
        if self.workers < 0:
            raise ValueError(f"workers={self.workers} must be >= 0")
        try:
            if self.device != "auto":
                torch.device(self.device)
        except RuntimeError:
            raise ValueError(
                f"device={self.device!r} is not a torch device (auto, cpu, cuda)"
            ) from None
        if self.freeze_encoder and not self.init:
            raise ValueError("freeze_encoder needs init=DIR: a random encoder would stay random")
        if self.init and self.kind != "nano":
            raise ValueError("init is for kind=nano")
        self.nano_config()  # validates the architecture fields

    def nano_config(self):
        """The `NanoVAEConfig` of a new ``nano`` autoencoder (latent statistics still unit)."""
        from lpm.models.vae.nano import NanoVAEConfig

        decoder = LightDecoderConfig(z_dim=self.z_dim, stage_blocks=self.decoder_blocks,
                                     norm_groups=self.norm_groups,
                                     speech_dim=SPEECH_DIM if self.speech else 0,
                                     speech_stages=self.speech_stages,
                                     speech_mouth=2 if self.mouth_labels else 0)  # fmt: skip
        return NanoVAEConfig(z_dim=self.z_dim, enc_blocks=self.enc_blocks,
                             norm_groups=self.norm_groups, decoder=decoder,
                             latents_mean=(0.0,) * self.z_dim,
                             latents_std=(1.0,) * self.z_dim)  # fmt: skip


def stage_batch(recipe: VaeRecipe, step: int, *, size: int | None = None) -> torch.Tensor:
    """Video (B, 3, T, S, S) in [-1, 1] of training identities, a function of (seed, step)."""
    return _stage_clips(recipe, step, size=size).video


class StageClips(NamedTuple):
    """A training batch of Stage clips (`_stage_clips`)."""

    video: torch.Tensor
    """(B, 3, T, S, S) in [-1, 1]."""
    mouth: torch.Tensor | None
    """Each frame's mouth region (B, 1, T, S, S), when asked for."""
    speech: torch.Tensor | None
    """The speech window the decoder reads for the video (B, past + T + 3 + ahead, 320), with
    ``recipe.speech``: the clip is rendered that much longer and the video cut from its middle."""
    labels: torch.Tensor
    """Each frame's labelled mouth opening and rounding (B, T, 2)."""
    source: torch.Tensor
    """The video to encode (B, 3, T, S, S): ``video``, except in the clips drawn for
    ``recipe.mouth_swap``, whose mouths are the clip's own mouth 2-8 frames early or late."""
    eyes: torch.Tensor | None = None
    """Each frame's eye region (B, 1, T, S, S), when asked for."""


def _stage_clips(
    recipe: VaeRecipe,
    step: int,
    *,
    size: int | None = None,
    mouths: bool = False,
    eyes: bool = False,
) -> StageClips:
    """`stage_batch`'s clips with what the decoder's losses need (`StageClips`)."""
    from lpm.data.stage.clip import clip_spec_for, render_clip
    from lpm.data.stage.render import eye_region, mouth_region, render_frame

    size = size or recipe.size
    dec = recipe.nano_config().decoder
    past, ahead = (dec.speech_past, dec.speech_ahead) if recipe.speech else (0, 0)
    lead = 3 + past if recipe.speech else 0  # decode_raw frame j is video frame j - 3
    total = lead + recipe.frames + ahead
    backend = "espeak" if recipe.speech else "formant"
    mel = _log_mel() if recipe.speech else None
    rng = np.random.default_rng(np.random.SeedSequence([recipe.seed, step, 0x5A9]))
    clips, regions, eye_regions, speech, labels, sources = [], [], [], [], [], []
    for b in range(recipe.batch_size):
        spec = clip_spec_for(recipe.seed * 1_000_003 + step, b, seconds=total / 24 + 0.05,
                             size=size, backend=backend)  # fmt: skip
        clip = render_clip(spec, references=False)
        window = range(lead, lead + recipe.frames)
        frames = clip.frames[window.start : window.stop]
        clips.append(torch.from_numpy(np.ascontiguousarray(frames)))
        at = slice(clip.clip_start_frame + window.start, clip.clip_start_frame + window.stop)
        perf = clip.performance
        labels.append(torch.from_numpy(np.stack([perf.mouth_open[at], perf.mouth_round[at]], -1)))
        if rng.random() < recipe.mouth_swap:
            lag = int(rng.integers(2, 9)) * (1 if rng.random() < 0.5 else -1)
            moved = dataclasses.replace(perf, mouth_open=np.roll(perf.mouth_open, lag),
                                        mouth_round=np.roll(perf.mouth_round, lag))  # fmt: skip
            frames = np.stack([render_frame(clip.performer, moved.frame_state(i), size)
                               for i in range(at.start, at.stop)])  # fmt: skip
        sources.append(torch.from_numpy(np.ascontiguousarray(frames)))
        states = [clip.performance.frame_state(clip.clip_start_frame + i) for i in window]
        if mouths:
            regions.append(torch.from_numpy(
                np.stack([mouth_region(clip.performer, s, size) for s in states])))  # fmt: skip
        if eyes:
            eye_regions.append(torch.from_numpy(
                np.stack([eye_region(clip.performer, s, size) for s in states])))  # fmt: skip
        if mel is not None:
            wave = torch.from_numpy(np.asarray(clip.speak_audio, np.float32))[None]
            with torch.no_grad():
                speech.append(mel(wave, len(clip.frames))[0, :total])
    as_video = lambda xs: torch.stack(xs).permute(0, 4, 1, 2, 3).float() / 127.5 - 1.0  # noqa: E731
    return StageClips(
        video=as_video(clips),
        mouth=torch.stack(regions)[:, None].float() if mouths else None,
        speech=torch.stack(speech) if speech else None,
        labels=torch.stack(labels).float(),
        source=as_video(sources),
        eyes=torch.stack(eye_regions)[:, None].float() if eyes else None,
    )


class _StageSteps(torch.utils.data.Dataset):
    """Step ``i``'s batch of `_stage_clips`, for a `DataLoader` that renders steps ahead."""

    def __init__(self, recipe: VaeRecipe) -> None:
        self.recipe = recipe

    def __len__(self) -> int:
        return self.recipe.vae_steps

    def __getitem__(self, step: int) -> StageClips:
        r = self.recipe
        return _stage_clips(r, step, mouths=r.mouth_weight > 0, eyes=r.eye_weight > 0)


def _one_thread(_worker: int) -> None:
    torch.set_num_threads(1)


def _stage_steps(recipe: VaeRecipe):
    """Every step's `StageClips` in order, rendered by ``recipe.workers`` processes (or here)."""
    steps = _StageSteps(recipe)
    if recipe.workers == 0:
        return (steps[i] for i in range(len(steps)))
    return torch.utils.data.DataLoader(  # its own generator: the run's random draws stay the same
        steps,
        batch_size=None,
        num_workers=recipe.workers,
        prefetch_factor=4,
        worker_init_fn=_one_thread,
        generator=torch.Generator(),
    )


def _log_mel():
    from lpm.models.audio import LogMelFeatures

    return LogMelFeatures()


def image_batch(recipe: VaeRecipe, step: int) -> torch.Tensor:
    """Still frames (B, 3, 1, S, S) in [-1, 1]: random states of training identities."""
    from lpm.bench.probes.data import sample_frame_state
    from lpm.data.stage.character import make_character, sample_identity
    from lpm.data.stage.render import render_frame

    rng = np.random.default_rng(np.random.SeedSequence([recipe.seed, step, 0x1A6E]))
    images = [
        render_frame(
            make_character(sample_identity(rng, "train")), sample_frame_state(rng), recipe.size
        )  # fmt: skip
        for _ in range(recipe.image_batch_size)
    ]
    video = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2)[:, :, None].float()
    return video / 127.5 - 1.0


def _image_grad_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    dx = lambda x: x[..., :, 1:] - x[..., :, :-1]
    dy = lambda x: x[..., 1:, :] - x[..., :-1, :]
    return (dx(a) - dx(b)).abs().mean() + (dy(a) - dy(b)).abs().mean()


def _temporal_l1(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """L1 between the frame-to-frame differences of two videos (B, 3, T, H, W)."""
    dt = lambda x: x[:, :, 1:] - x[:, :, :-1]
    return (dt(a) - dt(b)).abs().mean()


def _blur_latents(raw_bcfhw: torch.Tensor, weight_b: torch.Tensor) -> torch.Tensor:
    """(1 - w) z + w blur(z) per clip, blur: the 1-2-1 average over latent frames (edges held)."""
    padded = torch.cat([raw_bcfhw[:, :, :1], raw_bcfhw, raw_bcfhw[:, :, -1:]], dim=2)
    blur = 0.25 * padded[:, :, :-2] + 0.5 * raw_bcfhw + 0.25 * padded[:, :, 2:]
    w = weight_b.to(raw_bcfhw).view(-1, 1, 1, 1, 1)
    return (1 - w) * raw_bcfhw + w * blur


def _shift_latents(raw_bcfhw: torch.Tensor, p: float) -> torch.Tensor:
    """Each clip's latents, with probability ``p`` one latent frame early or late (edges held)."""
    early = torch.cat([raw_bcfhw[:, :, 1:], raw_bcfhw[:, :, -1:]], dim=2)
    late = torch.cat([raw_bcfhw[:, :, :1], raw_bcfhw[:, :, :-1]], dim=2)
    u = torch.rand(raw_bcfhw.shape[0]).view(-1, 1, 1, 1, 1).to(raw_bcfhw)
    return torch.where(u < p / 2, early, torch.where(u < p, late, raw_bcfhw))


def warm_start_nano_vae(recipe: VaeRecipe) -> NanoVAE:
    """A `NanoVAE` of ``recipe``'s architecture holding the weights of ``recipe.init``.

    Every tensor of ``init`` must fit the new architecture (widths unchanged); tensors it lacks
    belong to added residual blocks, whose second convolution starts at zero so each added block
    is the identity and the warm-started VAE reconstructs exactly as ``init`` does. A wider
    ``recipe.z_dim`` adds latent channels (`_widen_latents`), which the decoder starts by ignoring.
    """
    from lpm.models.vae import load_vae

    base = load_vae(recipe.init)
    if not isinstance(base, NanoVAE):
        raise ValueError(f"init={recipe.init} is not a nano VAE (config.json {NANO_VAE_CLASS!r})")
    cfg = recipe.nano_config()
    added = cfg.z_dim - base.z_dim
    if added < 0:
        raise ValueError(f"z_dim={cfg.z_dim} is narrower than init's {base.z_dim} channels")
    if added and recipe.freeze_encoder:
        raise ValueError("widening the latents (z_dim > init's) needs the encoder trained")
    cfg.latents_mean = tuple(base.config.latents_mean) + (0.0,) * added
    # New channels take the old ones' mean scale, so `latent_noise` hits them alike.
    scale = float(np.mean(base.config.latents_std))
    cfg.latents_std = tuple(base.config.latents_std) + (scale,) * added
    if (cfg.enc_dims, cfg.decoder.stage_dims) != (base.config.enc_dims,
                                                   base.config.decoder.stage_dims):  # fmt: skip
        raise ValueError("init has other widths than the recipe's architecture")
    vae = NanoVAE(cfg)
    state = _widen_latents(base.state_dict(), vae.state_dict()) if added else base.state_dict()
    missing, unexpected = vae.load_state_dict(state, strict=False)
    if unexpected:
        raise ValueError(f"init holds weights the recipe's architecture lacks: {unexpected[:4]}")
    with torch.no_grad():
        for name in missing:
            if name.endswith("conv2.weight") or name.endswith("conv2.bias"):
                vae.get_parameter(name).zero_()
            elif "norm" in name:
                raise ValueError("a warm start cannot add normalisation (norm_groups must match)")
    return vae


def _widen_latents(base: dict, target: dict) -> dict:
    """``base``'s NanoVAE weights fitted into ``target``'s wider latents.

    The encoder's output convolution keeps its channels and gains new ones (``target``'s random
    initialisation, scaled down so the new latents start small); the decoder's first convolution
    reads the new channels with zero weights, so the decoding is unchanged until training.
    """
    out = dict(base)
    enc_w, enc_b = "encoder.conv_out.weight", "encoder.conv_out.bias"
    dec_w = "decoder.time_conv.weight"
    old = base[enc_w].shape[0]
    out[enc_w] = torch.cat([base[enc_w], 0.1 * target[enc_w][old:]], dim=0)
    out[enc_b] = torch.cat([base[enc_b], torch.zeros_like(target[enc_b][old:])], dim=0)
    out[dec_w] = torch.cat([base[dec_w], torch.zeros_like(target[dec_w][:, old:])], dim=1)
    return out


def train_nano_vae(recipe: VaeRecipe, progress: ProgressFn | None = None) -> NanoVAE:
    """Train the `NanoVAE` on Stage clips (L1, motion-weighted when ``recipe.motion_weight``,
    + image-gradient L1 + temporal-difference L1 + a small latent L2)."""
    from lpm.train.conditioning import motion_weights

    torch.manual_seed(recipe.seed)
    device = resolve_device(recipe.device)
    batches = _stage_steps(recipe)  # workers fork before CUDA
    vae = (warm_start_nano_vae(recipe) if recipe.init else NanoVAE(recipe.nano_config())).train()
    vae = vae.to(device)
    if recipe.freeze_encoder:
        vae.encoder.requires_grad_(False).eval()
    params = [p for p in vae.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=recipe.lr, weight_decay=0.0)
    total = max(recipe.vae_steps, 1)

    def factor(i: int) -> float:
        warm = min(1.0, (i + 1) / 100)
        if recipe.lr_schedule == "cosine":
            return warm * 0.5 * (1.0 + math.cos(math.pi * min(i / total, 1.0)))
        return warm

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    speech_context = vae.decoder.speech_context if recipe.speech else (0, 0)
    for step, clips in enumerate(batches):
        video, mouth, speech, labels, source, eyes = (
            None if t is None else t.to(device, non_blocking=True) for t in clips
        )
        if recipe.freeze_encoder:
            with torch.no_grad():
                raw = vae.encode_raw(source)
        else:
            raw = vae.encode_raw(source)
        if recipe.latent_shift > 0 and raw.shape[2] > 1:
            raw = _shift_latents(raw, recipe.latent_shift)
        if recipe.latent_blur > 0 and raw.shape[2] > 1:
            raw = _blur_latents(raw, recipe.latent_blur * torch.rand(raw.shape[0]))
        if recipe.latent_noise > 0:
            raw = raw + recipe.latent_noise * torch.randn_like(raw) * vae.latents_std
        recon = trim_to_vae(vae.decode_raw(raw, speech=speech))
        err = (recon - video).abs()
        if recipe.motion_weight > 0:
            err = err * motion_weights(video, recipe.motion_weight)
        if mouth is not None:
            err = err * (1.0 + recipe.mouth_weight * mouth)
        if eyes is not None:
            err = err * (1.0 + recipe.eye_weight * eyes)
        l1 = err.mean()
        grad = _image_grad_l1(recon, video)
        temporal = _temporal_l1(recon, video)
        reg = raw.pow(2).mean()
        loss = l1 + recipe.gradient_weight * grad + recipe.kl_weight * reg
        if recipe.temporal_weight > 0:
            loss = loss + recipe.temporal_weight * temporal
        label_mse = None
        if recipe.mouth_labels > 0:  # decode_raw frame j is video frame j - 3
            heard = vae.decoder.speech_mouth(speech, speech.shape[1] - sum(speech_context))[:, 3:]
            label_mse = F.mse_loss(heard, labels)
            loss = loss + recipe.mouth_labels * label_mse
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        if progress is not None:
            metrics = {"l1": l1.item(), "grad": grad.item(), "temporal": temporal.item(),
                       "l2": reg.item()}  # fmt: skip
            if label_mse is not None:
                metrics["heard_mse"] = label_mse.item()
            if mouth is not None:  # plain L1 inside the mouth regions
                inside = (recon - video).abs().detach() * mouth
                metrics["mouth_l1"] = (inside.sum() / (3 * mouth.sum()).clamp(min=1)).item()
            if eyes is not None:  # plain L1 inside the eyes
                inside = (recon - video).abs().detach() * eyes
                metrics["eye_l1"] = (inside.sum() / (3 * eyes.sum()).clamp(min=1)).item()
            progress(step + 1, recipe.vae_steps, metrics)
    return vae.cpu().eval()


def train_vae(recipe: VaeRecipe, progress: ProgressFn | None = None) -> WanVAE:
    """Train a tiny Wan VAE on Stage images then clips; returns it with identity statistics."""
    torch.manual_seed(recipe.seed)
    vae = build_wan_vae(WanVAEConfig.tiny(base_dim=recipe.base_dim))
    opt = torch.optim.AdamW(vae.parameters(), lr=recipe.lr, weight_decay=0.0)
    vae.train()
    total = recipe.image_steps + recipe.vae_steps
    for step in range(total):
        if step < recipe.image_steps:
            video = image_batch(recipe, step)
        else:
            video = stage_batch(recipe, step)
        posterior = vae.model.encode(video).latent_dist
        # The posterior mean is decoded: sampling at the initial unit variance drowns the
        # latents in noise for hundreds of steps; the KL term still keeps the means bounded.
        recon = vae.model.decode(posterior.mode()).sample
        l1 = (recon - video).abs().mean()
        grad = _image_grad_l1(recon, video)
        kl = posterior.kl().mean()
        loss = l1 + recipe.gradient_weight * grad + recipe.kl_weight * kl
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(vae.parameters(), 1.0)
        opt.step()
        if progress is not None:
            progress(step + 1, total, {"l1": l1.item(), "grad": grad.item(), "kl": kl.item()})
    return vae.eval()


@torch.no_grad()
def latent_statistics(vae: WanVAE, recipe: VaeRecipe) -> tuple[list[float], list[float]]:
    """Per-channel mean and std of raw (unnormalised) latents over fresh Stage clips."""
    raws = []
    for i in range(recipe.stats_clips):
        video = stage_batch(recipe, 10_000_000 + i)
        if isinstance(vae, NanoVAE):
            raws.append(vae.encode_raw(video))
        else:
            raws.append(vae.model.encode(video).latent_dist.mode())
    raw = torch.cat(raws).transpose(0, 1).reshape(vae.z_dim, -1)
    std = raw.std(dim=1).clamp(min=1e-3)
    return raw.mean(dim=1).tolist(), std.tolist()


def with_statistics(vae: WanVAE, mean: list[float], std: list[float]) -> WanVAE:
    """The same weights with the latent statistics set in the config."""
    if isinstance(vae, NanoVAE):
        return vae.with_statistics(mean, std).eval()
    cfg = vae.config
    new = build_wan_vae(WanVAEConfig(**{**asdict(cfg), "latents_mean": tuple(mean),
                                        "latents_std": tuple(std)}))  # fmt: skip
    new.model.load_state_dict(vae.model.state_dict())
    return new.eval()


def train_light_decoder(
    vae: WanVAE, recipe: VaeRecipe, progress: ProgressFn | None = None
) -> LightDecoder:
    """Distil the VAE decoder into a `LightDecoder` on the VAE's own latents."""
    torch.manual_seed(recipe.seed + 1)
    decoder = LightDecoder(LightDecoderConfig(z_dim=vae.z_dim))
    opt = torch.optim.AdamW(decoder.parameters(), lr=recipe.lr * 3, weight_decay=0.0)
    for step in range(recipe.decoder_steps):
        video = stage_batch(recipe, 5_000_000 + step)
        with torch.no_grad():
            latents = vae.encode(video)
            target = vae.decode(latents)  # (B, 3, 1 + 4(F-1), S, S)
        pred = trim_to_vae(decoder(latents))
        loss, parts = distillation_loss(pred, target)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if progress is not None:
            progress(step + 1, recipe.decoder_steps, {k: float(v) for k, v in parts.items()})
    return decoder.eval()


@torch.no_grad()
def reconstruction_psnr(vae: WanVAE, decoder: LightDecoder | None, recipe: VaeRecipe,
                        size: int, clips: int = 4) -> dict[str, float]:  # fmt: skip
    """PSNR (dB) of VAE and light-decoder reconstructions of fresh clips at ``size`` pixels."""
    out = {"vae_psnr": 0.0} | ({"light_psnr": 0.0} if decoder is not None else {})
    for i in range(clips):
        clip = _stage_clips(recipe, 20_000_000 + i, size=size)
        video, speech = clip.video, clip.speech
        latents = vae.encode(video)
        if speech is not None:  # decode_raw frames, the first latent's 3 extra ones included
            recon = trim_to_vae(vae.decode_raw(vae._denormalize(latents), speech=speech))
        else:
            recon = vae.decode(latents)
        out["vae_psnr"] += _psnr(recon, video) / clips
        if decoder is not None:
            out["light_psnr"] += _psnr(trim_to_vae(decoder(latents)), video) / clips
    return out


def _psnr(a: torch.Tensor, b: torch.Tensor) -> float:
    mse = F.mse_loss((a + 1) / 2, (b + 1) / 2).item()
    return float(10 * np.log10(1.0 / max(mse, 1e-10)))


VAE_RECIPE_FILE = "train_recipe.json"
"""The recipe a finished ``out/vae`` was trained with, beside its weights."""

#: Recipe fields a rerun may change and still reuse a finished VAE (where and how fast it runs,
#: and the light decoder, which is trained afresh on every run).
_REUSE_MAY_CHANGE = frozenset({"device", "workers", "decoder_steps"})


def _check_reused_vae(vae_dir: Path, recipe: VaeRecipe) -> None:
    """Refuse to reuse ``vae_dir`` under a recipe that would have trained another VAE."""
    saved_path = vae_dir / VAE_RECIPE_FILE
    if not saved_path.is_file():
        log.warning("%s has no %s: reused without checking its recipe", vae_dir, VAE_RECIPE_FILE)
        return
    saved, asked = json.loads(saved_path.read_text()), json.loads(json.dumps(asdict(recipe)))
    changed = [
        f"{key}: {saved[key]!r} -> {asked[key]!r}"
        for key in sorted(saved.keys() & asked.keys())
        if saved[key] != asked[key] and key not in _REUSE_MAY_CHANGE
    ]
    if changed:
        raise ValueError(
            f"{vae_dir} holds a VAE trained with another recipe ({'; '.join(changed)}); "
            f"rerun with its recipe ({saved_path}), or give another --out"
        )


def run_vae_recipe(recipe: VaeRecipe, out: Path, progress: ProgressFn | None = None) -> dict:
    """Train VAE + statistics + light decoder; save them (diffusers/safetensors) under ``out``.

    ``out/vae`` is written (atomically) as soon as the VAE and its statistics are ready, so
    latents can be cached while the light decoder trains; a rerun reuses a finished ``out/vae``.
    """
    from lpm.models.dit.checkpoint import atomic_directory
    from lpm.models.vae import load_vae

    resolve_device(recipe.device)  # a GPU this machine lacks stops the run before it writes
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    if (out / "vae" / "config.json").is_file():
        _check_reused_vae(out / "vae", recipe)
        log.info("reusing the finished VAE in %s", out / "vae")
        vae = load_vae(out / "vae").eval()
    else:
        train = train_nano_vae if recipe.kind == "nano" else train_vae
        vae = train(recipe, progress)
        if not recipe.freeze_encoder:  # a frozen encoder keeps init's latents and statistics
            mean, std = latent_statistics(vae, recipe)
            vae = with_statistics(vae, mean, std)
        with atomic_directory(out / "vae") as tmp:
            if isinstance(vae, NanoVAE):
                vae.save(tmp)
            else:
                vae.model.save_pretrained(tmp, safe_serialization=True)
            (tmp / VAE_RECIPE_FILE).write_text(json.dumps(asdict(recipe), indent=2))
    decoder = None
    if recipe.decoder_steps and recipe.kind == "wan":  # the nano decoder is light already
        decoder = train_light_decoder(vae, recipe, progress)
    metrics = reconstruction_psnr(vae, decoder, recipe, size=recipe.size)
    metrics["seconds"] = time.perf_counter() - start
    if decoder is not None:
        save_module(decoder, decoder.config, out / "light_decoder", half=False)
    (out / "vae_card.json").write_text(json.dumps({"recipe": asdict(recipe), **metrics}, indent=2))
    log.info("nano VAE: %s", metrics)
    return metrics
