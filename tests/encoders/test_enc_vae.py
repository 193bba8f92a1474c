"""Wan VAE wrapper: loader round trip, normalisation, streaming decode == whole-clip decode."""

import json

import pytest
import torch

from lpm.models.vae import (
    LightDecoder,
    LightDecoderConfig,
    StreamingVAEDecoder,
    WanVAEConfig,
    build_wan_vae,
    distillation_loss,
    load_wan_vae,
    trim_to_vae,
)


@pytest.fixture(scope="module")
def tiny_vae():
    torch.manual_seed(0)
    cfg = WanVAEConfig.tiny()
    cfg = WanVAEConfig(
        base_dim=cfg.base_dim,
        num_res_blocks=cfg.num_res_blocks,
        latents_mean=tuple(0.1 * i for i in range(16)),
        latents_std=tuple(1.0 + 0.05 * i for i in range(16)),
    )
    return build_wan_vae(cfg).eval()


def test_config_validation():
    with pytest.raises(ValueError, match="latents_mean"):
        WanVAEConfig(z_dim=8)
    with pytest.raises(ValueError, match="temperal_downsample"):
        WanVAEConfig(temperal_downsample=(True, True, True))
    with pytest.raises(ValueError, match="dim_mult"):
        WanVAEConfig(dim_mult=(1, 2, 4))


def test_shapes_and_ranges(tiny_vae):
    video = torch.rand(2, 3, 9, 32, 48) * 2 - 1
    with torch.no_grad():
        latents = tiny_vae.encode(video)
        assert latents.shape == (2, 16, 3, 4, 6)
        out = tiny_vae.decode(latents)
    assert out.shape == (2, 3, 9, 32, 48)
    assert out.min() >= -1 and out.max() <= 1
    # normalisation is the exact inverse of denormalisation
    raw = torch.randn(1, 16, 2, 3, 3)
    torch.testing.assert_close(tiny_vae.denormalize(tiny_vae.normalize(raw)), raw)
    assert tiny_vae.latent_frames(9) == 3 and tiny_vae.video_frames(3) == 9


def test_save_load_round_trip(tiny_vae, tmp_path):
    tiny_vae.model.save_pretrained(tmp_path / "vae")
    loaded = load_wan_vae(tmp_path / "vae")
    assert loaded.config == tiny_vae.config
    video = torch.rand(1, 3, 5, 16, 16) * 2 - 1
    latents = torch.randn(1, 16, 2, 2, 2)
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(video), tiny_vae.encode(video), rtol=0, atol=0)
        torch.testing.assert_close(loaded.decode(latents), tiny_vae.decode(latents), rtol=0, atol=0)
    # a model root with a vae/ subfolder is accepted too
    assert load_wan_vae(tmp_path).config == tiny_vae.config


def test_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_wan_vae(tmp_path / "missing")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_wan_vae(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLWan"}))
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_wan_vae(tmp_path)
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "UNet2DModel"}))
    with pytest.raises(ValueError, match="not an AutoencoderKLWan"):
        load_wan_vae(tmp_path)


@pytest.mark.parametrize("chunks", [(1, 2, 2), (2, 3), (1, 1, 1, 1, 1)])
def test_streaming_decode_matches_whole_clip(tiny_vae, chunks):
    torch.manual_seed(1)
    latents = torch.randn(1, 16, sum(chunks), 3, 4)
    with torch.no_grad():
        whole = tiny_vae.decode(latents)
    stream = tiny_vae.streaming_decoder()
    assert isinstance(stream, StreamingVAEDecoder)
    parts, start = [], 0
    for n in chunks:
        frames = stream.decode_chunk(latents[:, :, start : start + n])
        assert frames.shape[2] == (1 + 4 * (n - 1) if start == 0 else 4 * n)
        parts.append(frames)
        start += n
    torch.testing.assert_close(torch.cat(parts, dim=2), whole, rtol=0, atol=1e-5)
    # reset() starts a new clip
    stream.reset()
    first = stream.decode_chunk(latents[:, :, :2])
    torch.testing.assert_close(first, whole[:, :, :5], rtol=0, atol=1e-5)


def test_light_decoder_shapes_and_streaming():
    torch.manual_seed(0)
    dec = LightDecoder(LightDecoderConfig())
    n_params = sum(p.numel() for p in dec.parameters())
    assert 0.2e6 < n_params < 0.4e6
    z = torch.randn(2, 16, 3, 4, 5)
    with torch.no_grad():
        out = dec(z)
        assert out.shape == (2, 3, 12, 32, 40)
        assert out.abs().max() <= 1
        chunked = torch.cat([dec(z[:, :, :1]), dec(z[:, :, 1:], z[:, :, :1])], dim=2)
    torch.testing.assert_close(chunked, out, rtol=0, atol=1e-6)
    assert trim_to_vae(out).shape[2] == 1 + 4 * (3 - 1)


def test_light_decoder_distillation_step(tiny_vae):
    torch.manual_seed(0)
    student = LightDecoder(LightDecoderConfig(frame_dim=16, stage_dims=(16, 16, 8)))
    opt = torch.optim.Adam(student.parameters(), lr=3e-3)
    latents = torch.randn(1, 16, 2, 2, 2)
    with torch.no_grad():
        target = tiny_vae.decode(latents)
    losses = []
    for _ in range(5):
        pred = trim_to_vae(student(latents))
        loss, parts = distillation_loss(pred, target)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert set(parts) == {"l1", "gradient", "temporal"}
    assert all(p.grad is not None for p in student.parameters())
    assert losses[-1] < losses[0]
    with pytest.raises(ValueError, match="differ"):
        distillation_loss(pred, target[:, :, :2])
