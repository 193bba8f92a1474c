"""SyncNet scoring pieces: the MFCC front end, face-crop geometry, resampling, offset search."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from lpm.bench import avsync

os.environ["HF_HUB_OFFLINE"] = "1"


def test_mfcc_matches_python_speech_features():
    psf = pytest.importorskip("python_speech_features", reason="reference MFCC implementation")
    rng = np.random.default_rng(0)
    for n in (300, 400, 401, 16_037):
        audio = avsync.pcm16_scale(0.1 * rng.standard_normal(n), 16_000)
        audio[50:120] = 0
        ref = psf.mfcc(audio.astype(np.int16), 16_000)
        assert np.array_equal(avsync.mfcc(audio), ref)


def test_mfcc_shape_and_pcm_scale():
    audio = avsync.pcm16_scale(np.full(24_000, 0.5), 24_000)  # 1 s at 24 kHz -> 16 kHz ints
    assert len(audio) == 16_000 and abs(np.median(audio) - 16_384) < 10
    assert avsync.mfcc(audio).shape == (99, 13)  # 1 + ceil((16000 - 400) / 160)


def test_offset_search_sign_and_confidence():
    torch.manual_seed(0)
    aud = torch.randn(80, 16)
    for k in (-7, 0, 4):
        lips = torch.roll(aud, k, 0)  # lip window i shows audio window i - k: the lips lag by k
        res = avsync.sync_verdict(lips, aud)
        assert res.offset == k and res.windows == 80 and res.dists.shape == (31,)
        assert res.confidence > 1.0 and res.min_dist < res.dists.mean()


def test_crop_track_and_crop_geometry():
    boxes = np.array([[40, 40, 80, 90]] * 5 + [[np.nan] * 4] * 3 + [[50, 40, 90, 90]] * 5, float)
    track = avsync.crop_track(boxes)
    assert track.shape == (13, 3) and np.isfinite(track).all()
    assert np.allclose(track[0], [60, 65, 25]) and np.allclose(track[-1], [70, 65, 25])
    assert avsync.crop_track(np.full((4, 4), np.nan)) is None
    rgb = np.zeros((100, 100, 3), np.uint8)
    rgb[..., 0] = 200  # red frame
    crop = avsync.crop_face(rgb, 50.0, 50.0, 40.0)  # crop spans y 10..122, x -6..106
    assert crop.shape == (224, 224, 3)
    assert crop[100, 112].tolist() == [0, 0, 200]  # BGR: the frame's red
    assert crop[-1, 112].tolist() == [110, 110, 110]  # below the frame: grey fill
    assert crop[100, 0].tolist() == [110, 110, 110]  # left of the frame


def test_resample_to_25_fps():
    idx = avsync.resample_index(48, 24.0)
    assert len(idx) == 50 and idx[0] == 0 and idx[-1] == 47
    assert np.all(np.diff(idx) >= 0) and len(np.unique(idx)) == 48
    assert np.array_equal(avsync.resample_index(25, 25.0), np.arange(25))
