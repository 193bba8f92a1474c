"""lpm-1.3b forward and backward in bf16 on a GPU (skipped without CUDA)."""

from __future__ import annotations

import time

import pytest
import torch

from lpm.config import get_model_config
from lpm.models.dit.model import LPMTransformer, References


@pytest.mark.gpu
def test_lpm_1_3b_forward_backward_bf16_480p_chunk():
    cfg = get_model_config("lpm-1.3b")
    device = torch.device("cuda")
    model = LPMTransformer(cfg).to(device=device, dtype=torch.bfloat16)
    h, w = cfg.latent_grid(480, 832)
    f = cfg.latents_per_chunk
    x = torch.randn(1, cfg.in_channels, f, h, w, device=device, dtype=torch.bfloat16)
    text = torch.randn(1, cfg.text_len, cfg.text_dim, device=device, dtype=torch.bfloat16)
    audio = torch.randn(1, cfg.frames_per_chunk, cfg.audio_dim, device=device, dtype=torch.bfloat16)
    refs = References(
        torch.randn(1, cfg.in_channels, 1, h, w, device=device, dtype=torch.bfloat16),
        (("global", 0),),
    )
    t = torch.tensor([500.0], device=device)
    for _ in range(2):  # warm-up, then timed
        torch.cuda.synchronize()
        start = time.perf_counter()
        out = model(x, t, text=text, speak_audio=audio, listen_audio=audio, references=refs)
        out.float().pow(2).mean().backward()
        torch.cuda.synchronize()
        elapsed = time.perf_counter() - start
        model.zero_grad(set_to_none=True)
    assert out.shape == x.shape and torch.isfinite(out.float()).all()
    print(f"lpm-1.3b bf16 fwd+bwd, one 480P chunk + 1 reference: {elapsed:.3f} s")
