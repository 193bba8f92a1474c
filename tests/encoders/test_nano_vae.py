"""The nano VAE: Wan's latent layout from 2D convolutions; streaming decode equals whole decode."""

from __future__ import annotations

import dataclasses

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


def test_deeper_normalised_variant_streams_exactly_and_round_trips(tmp_path):
    from lpm.models.vae.light_decoder import LightDecoderConfig

    torch.manual_seed(3)
    cfg = NanoVAEConfig(enc_blocks=2, norm_groups=8,
                        decoder=LightDecoderConfig(stage_blocks=1, norm_groups=8))  # fmt: skip
    vae = NanoVAE(cfg).eval()
    assert sum(p.numel() for p in vae.parameters()) > sum(p.numel() for p in NanoVAE().parameters())
    z = torch.randn(1, 16, 5, 4, 4)
    with torch.no_grad():
        whole = vae.decode(z)
    stream = vae.streaming_decoder()
    parts = [stream.decode_chunk(z[:, :, a:b]) for a, b in ((0, 2), (2, 5))]
    torch.testing.assert_close(torch.cat(parts, 2), whole, atol=1e-5, rtol=0)
    vae.save(tmp_path / "vae")
    again = load_vae(tmp_path / "vae")
    assert again.config.enc_blocks == 2 and again.config.decoder.stage_blocks == 1
    video = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    with torch.no_grad():
        torch.testing.assert_close(again.decode(again.encode(video)), vae.decode(vae.encode(video)))
    with pytest.raises(ValueError, match="norm_groups"):
        NanoVAEConfig(norm_groups=5)
    with pytest.raises(ValueError, match="enc_blocks"):
        NanoVAEConfig(enc_blocks=0)


def test_nano_recipe_motion_weight_and_architecture_fields():
    recipe = VaeRecipe(size=32, frames=5, batch_size=1, vae_steps=2, motion_weight=3.0,
                       enc_blocks=2, decoder_blocks=1, norm_groups=8)  # fmt: skip
    from lpm.train.vae import train_nano_vae

    seen = []
    vae = train_nano_vae(recipe, progress=lambda i, n, m: seen.append(m))
    assert len(seen) == 2 and vae.config.norm_groups == 8 and vae.config.enc_blocks == 2
    with pytest.raises(ValueError, match="motion_weight"):
        VaeRecipe(motion_weight=-1.0)
    with pytest.raises(ValueError, match="norm_groups"):
        VaeRecipe(norm_groups=7)


def test_warm_start_adds_identity_blocks_and_a_frozen_encoder_keeps_the_latents(tmp_path):
    from lpm.train.vae import train_nano_vae, warm_start_nano_vae

    torch.manual_seed(4)
    base = NanoVAE().with_statistics([0.1] * 16, [0.5] * 16).eval()
    base.save(tmp_path / "base")
    recipe = VaeRecipe(size=32, frames=5, batch_size=1, vae_steps=3, init=str(tmp_path / "base"),
                       freeze_encoder=True, decoder_blocks=1, temporal_weight=1.0,
                       lr_schedule="cosine", lr=1e-2)  # fmt: skip
    warm = warm_start_nano_vae(recipe).eval()
    video = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    with torch.no_grad():  # the added decoder blocks start as the identity
        torch.testing.assert_close(warm.decode(warm.encode(video)), base.decode(base.encode(video)))
    seen = []
    tuned = train_nano_vae(recipe, progress=lambda i, n, m: seen.append(m))
    assert len(seen) == 3 and all("temporal" in m for m in seen)
    with torch.no_grad():
        torch.testing.assert_close(tuned.encode(video), base.encode(video))  # encoder frozen
        assert not torch.allclose(
            tuned.decode(tuned.encode(video)), base.decode(base.encode(video))
        )
    assert tuned.config.latents_std == base.config.latents_std
    with pytest.raises(ValueError, match="freeze_encoder needs init"):
        VaeRecipe(freeze_encoder=True)
    with pytest.raises(ValueError, match="mouth_weight"):
        VaeRecipe(mouth_weight=-1.0)
    with pytest.raises(ValueError, match="lr_schedule"):
        VaeRecipe(lr_schedule="step")
    with pytest.raises(ValueError, match="norm_groups must match"):
        warm_start_nano_vae(VaeRecipe(init=str(tmp_path / "base"), norm_groups=8))


def test_widened_latents_start_from_the_old_reconstructions_and_then_carry_information(tmp_path):
    from lpm.train.vae import train_nano_vae, warm_start_nano_vae

    torch.manual_seed(6)
    base = NanoVAE().with_statistics([0.1] * 16, [0.5] * 16).eval()
    base.save(tmp_path / "base")
    recipe = VaeRecipe(size=32, frames=5, batch_size=1, vae_steps=3, init=str(tmp_path / "base"),
                       z_dim=20, lr=1e-2)  # fmt: skip
    wide = warm_start_nano_vae(recipe).eval()
    video = torch.rand(1, 3, 9, 16, 16) * 2 - 1
    with torch.no_grad():
        z = wide.encode(video)
        assert z.shape[1] == 20
        torch.testing.assert_close(z[:, :16], base.encode(video))  # old channels as they were
        assert z[:, 16:].abs().max() > 0  # the new ones already say something
        torch.testing.assert_close(wide.decode(z), base.decode(base.encode(video)))  # unread
    assert wide.config.latents_std[16:] == (0.5,) * 4  # the old channels' scale
    tuned = train_nano_vae(recipe)
    with torch.no_grad():  # after training the decoder reads the new channels
        z = tuned.encode(video)
        unread = torch.cat([z[:, :16], torch.zeros_like(z[:, 16:])], 1)
        assert not torch.allclose(tuned.decode(z), tuned.decode(unread))
    with pytest.raises(ValueError, match="narrower"):
        warm_start_nano_vae(VaeRecipe(init=str(tmp_path / "base"), z_dim=8))
    with pytest.raises(ValueError, match="needs the encoder trained"):
        warm_start_nano_vae(VaeRecipe(init=str(tmp_path / "base"), z_dim=20, freeze_encoder=True))


def test_mouth_weight_counts_the_mouth_region_more(tmp_path):
    from lpm.train.vae import _stage_clips, train_nano_vae

    recipe = VaeRecipe(size=32, frames=5, batch_size=2, vae_steps=2, mouth_weight=20.0)
    video, mouth, *_ = _stage_clips(recipe, 0, mouths=True)
    assert mouth.shape == (2, 1, 5, 32, 32) and 0 < mouth.mean() < 0.2
    assert torch.equal(video, _stage_clips(recipe, 0).video)  # the same clips either way
    seen = []
    train_nano_vae(recipe, progress=lambda i, n, m: seen.append(m))
    assert len(seen) == 2 and all(m["mouth_l1"] > 0 for m in seen)
    # the weighted L1 exceeds the plain one by the mouth region's share of the error
    plain = []
    train_nano_vae(dataclasses.replace(recipe, mouth_weight=0.0),
                   progress=lambda i, n, m: plain.append(m))  # fmt: skip
    assert seen[0]["l1"] > plain[0]["l1"] and "mouth_l1" not in plain[0]


def test_eye_weight_counts_the_eyes_more(tmp_path):
    from lpm.train.vae import _stage_clips, train_nano_vae

    recipe = VaeRecipe(size=32, frames=5, batch_size=2, vae_steps=2, eye_weight=20.0)
    clips = _stage_clips(recipe, 0, eyes=True)
    assert clips.eyes.shape == (2, 1, 5, 32, 32) and 0 < clips.eyes.mean() < 0.1
    assert clips.mouth is None and torch.equal(clips.video, _stage_clips(recipe, 0).video)
    seen, plain = [], []
    train_nano_vae(recipe, progress=lambda i, n, m: seen.append(m))
    train_nano_vae(dataclasses.replace(recipe, eye_weight=0.0),
                   progress=lambda i, n, m: plain.append(m))  # fmt: skip
    assert all(m["eye_l1"] > 0 for m in seen) and "eye_l1" not in plain[0]
    assert seen[0]["l1"] > plain[0]["l1"]  # same first step: only the weights differ
    with pytest.raises(ValueError, match="eye_weight"):
        VaeRecipe(eye_weight=-1.0)


def _speech_vae(seed: int) -> NanoVAE:
    """A nano VAE with a speech path whose modulation is not zero (as after training)."""
    from lpm.models.vae.light_decoder import LightDecoderConfig

    torch.manual_seed(seed)
    vae = NanoVAE(NanoVAEConfig(decoder=LightDecoderConfig(speech_dim=8, speech_hidden=6)))
    with torch.no_grad():
        for layer in (vae.decoder.speech_film, vae.decoder.speech_film_stage):
            layer.weight.normal_(0, 0.5)
    return vae.eval()


def test_speech_path_starts_as_the_identity_and_reads_each_frames_speech():
    from lpm.models.vae.light_decoder import SILENCE_LOG_MEL, LightDecoderConfig

    torch.manual_seed(3)
    plain = NanoVAE().eval()
    with_path = NanoVAE(NanoVAEConfig(decoder=LightDecoderConfig(speech_dim=8))).eval()
    missing, _ = with_path.load_state_dict(plain.state_dict(), strict=False)
    assert missing and all(k.startswith("decoder.speech_") for k in missing)
    z = torch.randn(1, 16, 4, 4, 4)
    speech = torch.randn(1, 16, 8)
    with torch.no_grad():  # a new speech path changes nothing until it is trained
        torch.testing.assert_close(with_path.decode(z, speech=speech), plain.decode(z))
    vae = _speech_vae(4)
    silence = torch.full((1, 16, 8), SILENCE_LOG_MEL)
    with torch.no_grad():
        quiet = vae.decode(z)
        torch.testing.assert_close(vae.decode(z, speech=silence), quiet)
        # speech at frame 9 only (decoded frame 6): frames beyond its 4-frame reach stay put
        bump = silence.clone()
        bump[0, 9] = 3.0
        out = vae.decode(z, speech=bump)
    changed = (out - quiet).abs().amax(dim=(0, 1, 3, 4)) > 1e-6
    assert changed[6] and changed.nonzero().min() >= 6 - 4 - 3 + 3 - 4
    assert not changed[: 9 - 3 - 4 - 1].any() and not changed[9 - 3 + 4 + 1 :].any()
    with pytest.raises(ValueError, match="speech must be"):
        vae.decode(z, speech=torch.zeros(1, 15, 8))


def test_streaming_decode_with_speech_equals_whole_decode_given_the_frames_ahead():
    from lpm.models.vae.light_decoder import SILENCE_LOG_MEL

    vae = _speech_vae(5)
    z = torch.randn(1, 16, 7, 4, 4)
    speech = torch.randn(1, 28 + 4, 8)  # the clip's 28 frames and 4 after it
    with torch.no_grad():  # a stream starts in silence; the clip's context given in full
        whole = vae.decode(z, speech=torch.cat([torch.full((1, 4, 8), SILENCE_LOG_MEL), speech], 1))
    bounds = ((0, 1), (1, 4), (4, 7))
    stream = vae.streaming_decoder()
    parts = [
        stream.decode_chunk(z[:, :, a:b], speech[:, 4 * a : 4 * b], speech[:, 4 * b : 4 * b + 4])
        for a, b in bounds
    ]
    torch.testing.assert_close(torch.cat(parts, 2), whole, atol=1e-5, rtol=0)
    # without the frames ahead (a live stream) only each chunk's last 4 frames may differ
    stream.reset()
    live = torch.cat([stream.decode_chunk(z[:, :, a:b], speech[:, 4 * a : 4 * b])
                      for a, b in bounds], 2)  # fmt: skip
    differ = ((live - whole).abs().amax(dim=(0, 1, 3, 4)) > 1e-5).nonzero().flatten().tolist()
    ends = {1 - 1, 13 - 1, 25 - 1}  # last decoded frame of each chunk (the first chunk is 1)
    assert differ and all(any(0 <= e - f < 4 for e in ends) for f in differ)


def test_speech_recipe_trains_the_decoder_on_spoken_clips_and_keeps_the_latents(tmp_path):
    init = tmp_path / "init"
    NanoVAE().save(init)
    recipe = VaeRecipe(size=32, frames=5, batch_size=2, vae_steps=3, stats_clips=2,
                       speech=True, init=str(init), freeze_encoder=True, latent_noise=0.1,
                       latent_blur=0.5)  # fmt: skip
    from lpm.train.vae import _stage_clips

    video, _, speech, *_ = _stage_clips(recipe, 0)
    assert video.shape == (2, 3, 5, 32, 32) and speech.shape == (2, 4 + 5 + 3 + 4, 320)
    assert speech.min() >= -11.52 and speech.max() > 0  # the clips speak
    run_vae_recipe(recipe, tmp_path / "out")
    trained = load_vae(tmp_path / "out")
    assert trained.speech_dim == 320
    with torch.no_grad():
        torch.testing.assert_close(trained.encode(video), load_vae(init).encode(video))
    with pytest.raises(ValueError, match="latent_noise"):
        VaeRecipe(latent_noise=-1.0)
    with pytest.raises(ValueError, match="latent_blur"):
        VaeRecipe(latent_blur=1.5)


def test_latent_blur_smears_time_only_as_far_as_its_weight():
    from lpm.train.vae import _blur_latents

    z = torch.zeros(2, 1, 5, 1, 1)
    z[:, :, 2] = 1.0  # one latent frame stands out
    out = _blur_latents(z, torch.tensor([0.0, 1.0]))
    assert torch.equal(out[0], z[0])
    torch.testing.assert_close(out[1, 0, :, 0, 0], torch.tensor([0.0, 0.25, 0.5, 0.25, 0.0]))
    steady = torch.ones(1, 1, 4, 2, 2)  # what does not change over time is kept
    torch.testing.assert_close(_blur_latents(steady, torch.tensor([1.0])), steady)


def test_latent_shift_moves_whole_clips_one_latent_early_or_late():
    from lpm.train.vae import _shift_latents

    z = torch.arange(4.0).view(1, 1, 4, 1, 1).repeat(64, 1, 1, 1, 1)
    torch.testing.assert_close(_shift_latents(z, 0.0), z)
    torch.manual_seed(0)
    out = _shift_latents(z, 1.0)[:, 0, :, 0, 0]
    early, late = torch.tensor([1.0, 2.0, 3.0, 3.0]), torch.tensor([0.0, 0.0, 1.0, 2.0])
    is_early = (out == early).all(1)
    assert ((out == early).all(1) | (out == late).all(1)).all()
    assert 0 < is_early.sum() < 64  # both directions occur
    with pytest.raises(ValueError, match="latent_shift"):
        VaeRecipe(latent_shift=2.0)


def test_finer_speech_stages_and_mouth_head_start_from_a_trained_decoder_unchanged():
    from lpm.models.vae.light_decoder import LightDecoderConfig

    base = _speech_vae(6)
    cfg = LightDecoderConfig(speech_dim=8, speech_hidden=6, speech_stages=3, speech_mouth=2)
    finer = NanoVAE(NanoVAEConfig(decoder=cfg)).eval()
    missing, unexpected = finer.load_state_dict(base.state_dict(), strict=False)
    assert not unexpected and sorted(missing) == sorted(
        f"decoder.{m}.{p}"
        for m in ("speech_film_stage1", "speech_film_stage2", "speech_mouth_head")
        for p in ("weight", "bias")
    )
    z, speech = torch.randn(1, 16, 3, 4, 4), torch.randn(1, 12, 8)
    with torch.no_grad():  # the added stages start at zero; the head is never drawn from
        torch.testing.assert_close(finer.decode(z, speech=speech), base.decode(z, speech=speech))
        finer.decoder.speech_film_stage2.weight.normal_(0, 0.5)
        assert not torch.allclose(finer.decode(z, speech=speech), base.decode(z, speech=speech))
        window = finer.speech_window(speech, 12)
        heard = finer.decoder.speech_mouth(window, 12)
    assert heard.shape == (1, 12, 2)
    with pytest.raises(ValueError, match="no mouth head"):
        base.decoder.speech_mouth(window, 12)
    with pytest.raises(ValueError, match="speech_stages"):
        LightDecoderConfig(speech_dim=8, speech_stages=4)


def test_mouth_labels_train_the_speech_path_on_the_clips_labelled_mouths(tmp_path):
    from lpm.data.stage.clip import clip_spec_for, render_clip
    from lpm.train.vae import _stage_clips, train_nano_vae

    init = tmp_path / "init"
    NanoVAE().save(init)
    recipe = VaeRecipe(size=32, frames=5, batch_size=2, vae_steps=2, speech=True,
                       init=str(init), freeze_encoder=True, mouth_labels=5.0)  # fmt: skip
    labels = _stage_clips(recipe, 0).labels
    assert labels.shape == (2, 5, 2) and labels.min() >= 0 and labels.max() <= 1
    # the labels of the video's frames: those 4 + 3 frames into the longer rendered clip
    spec = clip_spec_for(recipe.seed * 1_000_003, 1, seconds=16 / 24 + 0.05, size=32,
                         backend="espeak")  # fmt: skip
    clip = render_clip(spec, references=False)
    torch.testing.assert_close(labels[1, :, 0], torch.tensor(clip.labels["mouth_open"][7:12]))
    seen = []
    vae = train_nano_vae(recipe, progress=lambda i, n, m: seen.append(m))
    assert len(seen) == 2 and all(m["heard_mse"] > 0 for m in seen)
    assert vae.decoder.config.speech_mouth == 2
    with pytest.raises(ValueError, match="needs speech"):
        VaeRecipe(mouth_labels=1.0)


def test_mouth_swap_encodes_the_clip_with_its_mouth_at_another_time_and_nothing_else_moved():
    from lpm.train.vae import _stage_clips

    init = "unused"  # only the clips are drawn here
    recipe = VaeRecipe(size=32, frames=9, batch_size=4, speech=True, init=init,
                       freeze_encoder=True, mouth_swap=1.0)  # fmt: skip
    clips = _stage_clips(recipe, 0, mouths=True)
    kept = _stage_clips(dataclasses.replace(recipe, mouth_swap=0.0), 0)
    assert torch.equal(kept.source, kept.video) and torch.equal(kept.video, clips.video)
    differ = (clips.source - clips.video).abs().amax(1, keepdim=True) > 0.05  # (B, 1, T, S, S)
    assert differ.any()  # a speaking clip's mouth moved
    # what differs lies in the mouth regions of the two times (the region grows as it opens)
    near = torch.nn.functional.max_pool3d(clips.mouth, (17, 5, 5), stride=1, padding=(8, 2, 2))
    assert not (differ & (near == 0)).any()
    with pytest.raises(ValueError, match="mouth_swap"):
        VaeRecipe(mouth_swap=0.5)


def test_clips_rendered_by_workers_train_the_same_decoder_as_clips_rendered_in_the_loop(tmp_path):
    from lpm.train.vae import train_nano_vae

    NanoVAE().save(tmp_path / "init")
    recipe = VaeRecipe(size=32, frames=5, batch_size=2, vae_steps=3, init=str(tmp_path / "init"),
                       freeze_encoder=True, speech=True, mouth_weight=10.0, mouth_labels=1.0,
                       mouth_swap=0.5, latent_noise=0.1, seed=3)  # fmt: skip
    torch.manual_seed(0)
    here = train_nano_vae(recipe)
    torch.manual_seed(0)
    ahead = train_nano_vae(dataclasses.replace(recipe, workers=2))
    theirs = ahead.state_dict()
    for name, mine in here.state_dict().items():
        torch.testing.assert_close(mine, theirs[name], msg=name)
    assert next(ahead.parameters()).device.type == "cpu"
    with pytest.raises(ValueError, match="workers"):
        VaeRecipe(workers=-1)
    with pytest.raises(ValueError, match="not a torch device"):
        VaeRecipe(device="gpu0")
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="without CUDA|no GPU is visible"):
            train_nano_vae(dataclasses.replace(recipe, device="cuda"))
