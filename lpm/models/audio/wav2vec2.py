"""wav2vec2 audio features for the real scales: layer-weighted hidden states at the video rate.

Shape legend
    B  batch
    N  audio samples at 16 kHz
    S  wav2vec2 frames (~50 per second)
    K  hidden-state layers: num_hidden_layers + 1 (the input embedding output included)
    D  wav2vec2 hidden width (base: 768, large: 1024)
    T  video frames

Expected local directory layout for `load_wav2vec2` (e.g. a copy of facebook/wav2vec2-base-960h
or TencentGameMate/chinese-wav2vec2-base)::

    <path>/config.json                  Wav2Vec2 config
    <path>/model.safetensors            weights (pytorch_model.bin also works)
    <path>/preprocessor_config.json     optional; its ``do_normalize`` is honoured
"""

from __future__ import annotations

import json
from fractions import Fraction
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["Wav2Vec2Features", "load_wav2vec2"]


def load_wav2vec2(
    path: str | Path,
    *,
    dtype: torch.dtype = torch.float32,
    device: str | torch.device = "cpu",
) -> nn.Module:
    """Load `transformers.Wav2Vec2Model` from a local directory (module docstring); no hub.

    The returned model carries ``lpm_do_normalize`` (bool) read from preprocessor_config.json
    (True when that file is absent, as for most wav2vec2 checkpoints).
    """
    from transformers import Wav2Vec2Model

    root = Path(path).expanduser()
    if not root.is_dir():
        raise FileNotFoundError(
            f"wav2vec2 directory {root} does not exist; pass the local folder holding "
            "config.json and model.safetensors"
        )
    if not (root / "config.json").is_file():
        raise FileNotFoundError(f"no config.json in {root}: not a wav2vec2 model folder")
    if not any(root.glob("*.safetensors")) and not any(root.glob("*.bin")):
        raise FileNotFoundError(f"no weights in {root}: expected model.safetensors")
    model = Wav2Vec2Model.from_pretrained(root, local_files_only=True, dtype=dtype)
    do_normalize = True
    pre = root / "preprocessor_config.json"
    if pre.is_file():
        do_normalize = bool(json.loads(pre.read_text()).get("do_normalize", True))
    model.lpm_do_normalize = do_normalize
    return model.eval().to(device)


class Wav2Vec2Features(nn.Module):
    """Waveform (B, N) at 16 kHz → softmax-layer-weighted wav2vec2 features (B, T, D).

    The K per-layer weights are learnable (initialised equal); the backbone is frozen by default
    (it runs without gradients and stays in eval mode, so no SpecAugment masking or dropout).
    Features are resampled from ~50 Hz to ``fps`` by linear interpolation.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        fps: float = 24.0,
        sample_rate: int = 16000,
        freeze_backbone: bool = True,
        normalize_input: bool | None = None,
    ) -> None:
        super().__init__()
        if fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        self.model = model
        self.fps = fps
        self.sample_rate = sample_rate
        self.freeze_backbone = freeze_backbone
        if normalize_input is None:
            normalize_input = getattr(model, "lpm_do_normalize", True)
        self.normalize_input = normalize_input
        num_layers = int(model.config.num_hidden_layers) + 1
        self.layer_logits = nn.Parameter(torch.zeros(num_layers))
        if freeze_backbone:
            self.model.requires_grad_(False)

    @property
    def dim(self) -> int:
        return int(self.model.config.hidden_size)

    def train(self, mode: bool = True) -> Wav2Vec2Features:
        super().train(mode)
        if self.freeze_backbone:
            self.model.eval()
        return self

    def num_video_frames(self, num_samples: int) -> int:
        """round(N fps / sample_rate)."""
        fps = Fraction(self.fps).limit_denominator(1001)
        return int(Fraction(num_samples) * fps / self.sample_rate + Fraction(1, 2))

    def forward(self, waveform: torch.Tensor, n_video_frames: int | None = None) -> torch.Tensor:
        """Waveform (B, N) or (N,) at ``sample_rate`` Hz → features (B, T, D)."""
        wave_bn = waveform[None] if waveform.ndim == 1 else waveform
        if wave_bn.ndim != 2:
            raise ValueError(f"waveform must be (B, N) or (N,), got {tuple(waveform.shape)}")
        t = self.num_video_frames(wave_bn.shape[1]) if n_video_frames is None else n_video_frames
        dtype = next(self.model.parameters()).dtype
        wave_bn = wave_bn.to(dtype)
        if self.normalize_input:
            # As Wav2Vec2FeatureExtractor(do_normalize=True): zero mean, unit variance per clip.
            mean = wave_bn.mean(dim=1, keepdim=True)
            var = wave_bn.var(dim=1, keepdim=True, unbiased=False)
            wave_bn = (wave_bn - mean) / torch.sqrt(var + 1e-7)
        with torch.set_grad_enabled(torch.is_grad_enabled() and not self.freeze_backbone):
            hidden = self.model(wave_bn, output_hidden_states=True).hidden_states
        hidden_kbsd = torch.stack(hidden, dim=0)
        weights_k = torch.softmax(self.layer_logits, dim=0).to(hidden_kbsd.dtype)
        mixed_bsd = torch.einsum("k,kbsd->bsd", weights_k, hidden_kbsd)
        # (B, S, D) → (B, D, S) → linear resample in time → (B, T, D).
        out_bdt = F.interpolate(
            mixed_bsd.transpose(1, 2), size=t, mode="linear", align_corners=False
        )
        return out_bdt.transpose(1, 2)
