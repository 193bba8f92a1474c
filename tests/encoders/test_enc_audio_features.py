"""Audio features: log-mel alignment and pitch, projector, wav2vec2 loader, online windows."""

import math

import pytest
import torch
from transformers import Wav2Vec2Config, Wav2Vec2Model

from lpm.models.audio import (
    AudioProjector,
    AudioProjectorConfig,
    AudioWindowConfig,
    AudioWindows,
    LogMelConfig,
    LogMelFeatures,
    Wav2Vec2Features,
    load_wav2vec2,
)


def _tone(seconds: float, freq: float = 440.0, sr: int = 16000) -> torch.Tensor:
    t = torch.arange(round(sr * seconds), dtype=torch.float64) / sr
    return (0.5 * torch.sin(2 * math.pi * freq * t)).float()


@pytest.mark.parametrize("seconds", [0.5, 1.0, 1.37, 2.9, 5.0])
@pytest.mark.parametrize("fps", [24.0, 25.0, 30.0])
def test_logmel_frame_alignment(seconds, fps):
    cfg = LogMelConfig(fps=fps, mels_per_frame=4, n_mels=40)
    mel = LogMelFeatures(cfg)
    feats = mel(_tone(seconds)[None].repeat(2, 1))
    n_frames = math.floor(seconds * fps + 0.5)  # half-up rounding of N fps / sample_rate
    assert feats.shape == (2, n_frames, 160)
    centres = mel.frame_centres(n_frames)
    # exactly k mel frames per video frame, centred inside that frame's time span
    frame_of_centre = torch.div(centres * fps, 16000, rounding_mode="floor").long()
    assert torch.equal(frame_of_centre, torch.arange(n_frames).repeat_interleave(4))
    assert torch.all(centres.diff() > 0)


def test_logmel_tone_peaks_in_right_band():
    cfg = LogMelConfig(n_mels=80)
    mel = LogMelFeatures(cfg)
    feats = mel(_tone(1.0, 440.0)).reshape(1, 24, 4, 80)
    bands = feats[0, 2:-2].argmax(-1)  # away from the clip edges
    fb = mel.filterbank
    bin_440 = round(440 * cfg.n_fft / cfg.sample_rate)
    expected = int(fb[:, bin_440].argmax())
    assert torch.all(bands == expected)
    high = mel(_tone(1.0, 3000.0)).reshape(1, 24, 4, 80)[0, 10].argmax(-1)
    assert torch.all(high > expected + 20)
    # silence hits the log floor
    assert torch.allclose(mel(torch.zeros(1600)), torch.tensor(math.log(cfg.log_floor)))


def test_logmel_is_shift_equivariant_by_whole_seconds():
    mel = LogMelFeatures(LogMelConfig(fps=24.0))
    x = torch.randn(3 * 16000) * 0.1
    whole = mel(x)
    shifted = mel(x[16000:])
    torch.testing.assert_close(shifted[:, 1:-1], whole[:, 25:71], rtol=0, atol=1e-4)


def test_logmel_config_validation():
    with pytest.raises(ValueError, match="f_max"):
        LogMelConfig(f_max=9000.0)
    with pytest.raises(ValueError, match="mels_per_frame"):
        LogMelConfig(mels_per_frame=0)


def test_audio_projector():
    torch.manual_seed(0)
    cfg = LogMelConfig(n_mels=40, mels_per_frame=2)
    proj = AudioProjector(AudioProjectorConfig(in_dim=cfg.feature_dim, out_dim=32, hidden_dim=64))
    feats = LogMelFeatures(cfg)(torch.randn(2, 16000) * 0.1)
    out = proj(feats)
    assert out.shape == (2, 24, 32)
    out.square().mean().backward()
    assert proj.fc1.weight.grad is not None
    conv = AudioProjector(AudioProjectorConfig(in_dim=80, out_dim=16, temporal_kernel=3))
    assert conv(feats).shape == (2, 24, 16)
    with pytest.raises(ValueError, match="temporal_kernel"):
        AudioProjectorConfig(temporal_kernel=2)
    with pytest.raises(ValueError, match="features must be"):
        proj(torch.zeros(2, 24, 7))


@pytest.fixture(scope="module")
def tiny_wav2vec2_dir(tmp_path_factory):
    torch.manual_seed(0)
    cfg = Wav2Vec2Config(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64,
        conv_dim=(16,) * 7, num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2,
        vocab_size=8,
    )  # fmt: skip
    model = Wav2Vec2Model(cfg).eval()
    root = tmp_path_factory.mktemp("w2v")
    model.save_pretrained(root)
    return root, model


def test_wav2vec2_round_trip_and_features(tiny_wav2vec2_dir):
    root, reference = tiny_wav2vec2_dir
    model = load_wav2vec2(root)
    wave = torch.randn(2, 16000) * 0.1
    with torch.no_grad():
        torch.testing.assert_close(
            model(wave).last_hidden_state, reference(wave).last_hidden_state, rtol=0, atol=0
        )
    feats = Wav2Vec2Features(model, fps=25.0)
    out = feats(wave)
    assert out.shape == (2, 25, 32)
    assert feats(wave, n_video_frames=30).shape == (2, 30, 32)
    # the layer weights learn; the frozen backbone does not
    out.square().mean().backward()
    assert feats.layer_logits.grad is not None and feats.layer_logits.grad.abs().sum() > 0
    assert all(p.grad is None for p in feats.model.parameters())
    feats.train()
    assert not feats.model.training
    # with one-hot layer weights the output is that layer, interpolated
    with torch.no_grad():
        feats.layer_logits.copy_(torch.tensor([-1e4, -1e4, 0.0]))
        last = feats(wave, n_video_frames=49)
        ref_hidden = model((wave - wave.mean(1, keepdim=True)) / wave.std(1, keepdim=True))
    assert ref_hidden.last_hidden_state.shape[1] == 49
    torch.testing.assert_close(last, ref_hidden.last_hidden_state, rtol=1e-3, atol=1e-3)


def test_wav2vec2_loader_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_wav2vec2(tmp_path / "nope")
    with pytest.raises(FileNotFoundError, match="no config.json"):
        load_wav2vec2(tmp_path)
    (tmp_path / "config.json").write_text("{}")
    with pytest.raises(FileNotFoundError, match="no weights"):
        load_wav2vec2(tmp_path)


def test_audio_windows_geometry():
    win = AudioWindows(AudioWindowConfig())
    assert (win.window_samples, win.window_frames, win.current_frames) == (48000, 72, 24)
    wave = torch.arange(1, 40001, dtype=torch.float32)[None]
    assert win.num_chunks(40000) == 3
    w0 = win.audio_window(wave, 0)
    assert w0.shape == (1, 48000)
    assert not w0[:, :32000].any() and torch.equal(w0[:, 32000:], wave[:, :16000])
    w2 = win.audio_window(wave, 2)
    assert torch.equal(w2[:, :40000], wave) and not w2[:, 40000:].any()
    feats = torch.randn(1, 72, 5)
    f0 = win.feature_window(feats, 0)
    assert not f0[:, :48].any() and torch.equal(win.current(f0), feats[:, :24])
    torch.testing.assert_close(win.feature_window(feats, 2), feats)
    assert not win.feature_window(feats, 5).any()
    with pytest.raises(ValueError, match="whole number"):
        AudioWindowConfig(history_s=1.01)


def test_windowed_logmel_matches_whole_clip():
    torch.manual_seed(0)
    mel = LogMelFeatures(LogMelConfig(fps=24.0, n_mels=40))
    win = AudioWindows(AudioWindowConfig(sample_rate=16000, fps=24))
    wave = torch.randn(2, round(4.5 * 16000)) * 0.1
    n_chunks = win.num_chunks(wave.shape[1])
    whole = mel(wave, n_video_frames=n_chunks * win.current_frames)
    online = win.encode_online(wave, mel)
    assert online.shape == (2, n_chunks, 72, 160)
    for c in range(n_chunks):
        cut = win.feature_window(whole, c)
        first_real = max(0, win.history_frames - c * win.current_frames)
        # Frames whose analysis windows stay inside the audio window: all but the window's last
        # frame and, when real audio precedes the window, its first frame.
        start = first_real if first_real > 0 else 1
        torch.testing.assert_close(online[:, c, start:-1], cut[:, start:-1], rtol=0, atol=1e-4)
        assert not cut[:, :first_real].any()
