"""The nano VAE: Wan's latent layout from 2D convolutions; streaming decode equals whole decode."""

from __future__ import annotations

import pytest
import torch

from lpm.models.vae import NanoVAE, NanoVAEConfig, WanVAE, load_vae
from lpm.train.vae import VaeRecipe, run_vae_recipe


def test_shapes_follow_the_wan_alignment():
    torch.manual_seed(0)
    vae = NanoVAE().eval()
    video = torch.rand(2, 3, 1 + 4 * 5, 32, 48) * 2 - 1
    with torch.no_grad():
        z = vae.encode(video)
        out = vae.decode(z)
    assert z.shape == (2, 16, 6, 4, 6)
    assert out.shape == video.shape and out.abs().max() <= 1
    assert NanoVAE.latent_frames(21) == WanVAE.latent_frames(21) == 6
    # frames beyond 1 + 4k are dropped, as by the Wan encoder
    with torch.no_grad():
        assert torch.equal(vae.encode(torch.cat([video, video[:, :, :3]], 2)), z)


def test_chunked_streaming_decode_equals_whole_decode():
    torch.manual_seed(1)
    vae = NanoVAE().eval()
    z = torch.randn(1, 16, 7, 4, 4)
    with torch.no_grad():
        whole = vae.decode(z)
    stream = vae.streaming_decoder()
    parts = [stream.decode_chunk(z[:, :, a:b]) for a, b in ((0, 1), (1, 4), (4, 7))]
    assert [p.shape[2] for p in parts] == [1, 12, 12]
    torch.testing.assert_close(torch.cat(parts, 2), whole, atol=1e-6, rtol=0)
    assert stream.latent_frames_seen == 7


def test_save_load_round_trip_keeps_statistics(tmp_path):
    torch.manual_seed(2)
    vae = NanoVAE().with_statistics([0.5] * 16, [2.0] * 16).eval()
    vae.save(tmp_path / "vae")
    again = load_vae(tmp_path)  # a directory holding vae/ is accepted too
    assert isinstance(again, NanoVAE) and again.config.latents_std == (2.0,) * 16
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(again.encode(video), vae.encode(video))
    with pytest.raises(ValueError, match="z_dim"):
        NanoVAEConfig(latents_mean=(0.0,) * 3)


def test_nano_recipe_learns_and_saves(tmp_path):
    recipe = VaeRecipe(size=32, frames=5, batch_size=2, vae_steps=40, stats_clips=2, lr=2e-3)
    seen = []
    metrics = run_vae_recipe(recipe, tmp_path, progress=lambda i, n, m: seen.append(m["l1"]))
    assert len(seen) == 40 and sum(seen[-5:]) / 5 < sum(seen[:5]) / 5
    assert metrics["vae_psnr"] > 10 and "light_psnr" not in metrics
    assert isinstance(load_vae(tmp_path / "vae"), NanoVAE)
    assert not (tmp_path / "light_decoder").exists()
