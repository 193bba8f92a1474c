"""Released-weight loaders of SyncNet, ArcFace (IResNet) and I3D: layouts, round trips, errors.

Random weights only: every check is about architecture, key layout and plumbing. The released
key names and shapes asserted here are read off the public sources (syncnet_python's
`SyncNetModel.py`, insightface's `iresnet.py`, pytorch-i3d's `pytorch_i3d.py`).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch
from safetensors.torch import save_file

from lpm.bench.nets import arcface, i3d, syncnet
from lpm.bench.nets.checkpoint import is_torchscript, read_state_dict, released_state

os.environ["HF_HUB_OFFLINE"] = "1"


def _randomise_norms(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Random BN statistics and affine terms, so a mis-mapped BN changes the output."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, torch.nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.rand(n, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.1)
    return model.eval()


def _meta_shapes(build) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        model = build()
    return {k: tuple(v.shape) for k, v in model.state_dict().items()}


# --- SyncNet ------------------------------------------------------------------------------------


def test_syncnet_released_layout():
    shapes = {syncnet.released_key(k): s for k, s in _meta_shapes(syncnet.SyncNet).items()}
    assert shapes["netcnnaud.0.weight"] == (64, 1, 3, 3)
    assert shapes["netcnnaud.18.weight"] == (512, 256, 5, 4)
    assert shapes["netcnnaud.19.running_var"] == (512,)
    assert shapes["netfcaud.3.weight"] == (1024, 512)
    assert shapes["netcnnlip.0.weight"] == (96, 3, 5, 7, 7)
    assert shapes["netcnnlip.4.weight"] == (256, 96, 1, 5, 5)
    assert shapes["netcnnlip.18.weight"] == (512, 256, 1, 6, 6)
    assert shapes["netfclip.1.running_mean"] == (512,)
    convs = {int(k.split(".")[1]) for k in shapes if k.startswith("netcnnlip.")}
    assert convs == {0, 1, 4, 5, 8, 9, 11, 12, 14, 15, 18, 19}
    assert {k.split(".")[1] for k in shapes if k.startswith("netfcaud.")} == {"0", "1", "3"}


def test_syncnet_full_round_trip_through_released_files(tmp_path):
    torch.manual_seed(0)
    model = _randomise_norms(syncnet.SyncNet())
    state = released_state(model, syncnet.released_key)
    old = {k: v for k, v in state.items() if not k.endswith("num_batches_tracked")}
    torch.save(old, tmp_path / "legacy.model", _use_new_zipfile_serialization=False)
    torch.save(state, tmp_path / "zip.model")
    save_file(state, tmp_path / "syncnet.safetensors")
    mfcc = torch.randn(2, 1, 13, 20)
    crops = torch.rand(2, 3, 5, 224, 224) * 255
    with torch.no_grad():
        ref_a, ref_l = model.embed_audio(mfcc), model.embed_lips(crops)
        for name in ("legacy.model", "zip.model", "syncnet.safetensors"):
            loaded = syncnet.load_syncnet(tmp_path / name)
            assert not loaded.training
            assert torch.equal(loaded.embed_audio(mfcc), ref_a)
            assert torch.equal(loaded.embed_lips(crops), ref_l)
    assert ref_a.shape == ref_l.shape == (2, 1024)


def test_loader_names_every_mismatch(tmp_path):
    state = released_state(syncnet.SyncNet(), syncnet.released_key)
    del state["netcnnlip.4.weight"]
    state["netcnnlip.2.weight"] = torch.zeros(3)
    state["netfcaud.3.weight"] = torch.zeros(10, 512)
    torch.save(state, tmp_path / "bad.model")
    with pytest.raises(ValueError) as err:
        syncnet.load_syncnet(tmp_path / "bad.model")
    msg = str(err.value)
    assert "1 missing [netcnnlip.4.weight]" in msg
    assert "1 unexpected [netcnnlip.2.weight]" in msg
    assert "netfcaud.3.weight (10, 512) (expected (1024, 512))" in msg
    with pytest.raises(FileNotFoundError, match="SyncNet weights"):
        syncnet.load_syncnet(tmp_path / "nope.model")
    (tmp_path / "junk.model").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="weights_only=True"):
        syncnet.load_syncnet(tmp_path / "junk.model")
    torch.save({"netcnnaud.0.weight": torch.zeros(1), "epoch": 3}, tmp_path / "mixed.model")
    with pytest.raises(ValueError, match="'epoch' is int, not a tensor"):
        read_state_dict(tmp_path / "mixed.model", "SyncNet")


def test_checkpoint_containers_and_prefixes(tmp_path):
    model = arcface.IResNet(arcface.IResNetConfig(layers=(1, 1, 1, 1), widths=(4, 4, 8, 8)))
    wrapped = {"state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}
    torch.save(wrapped, tmp_path / "wrapped.pth")
    assert set(read_state_dict(tmp_path / "wrapped.pth", "x")) == set(model.state_dict())
    torch.jit.script(torch.nn.Linear(2, 2)).save(str(tmp_path / "ts.pt"))
    assert is_torchscript(tmp_path / "ts.pt") and not is_torchscript(tmp_path / "wrapped.pth")


# --- ArcFace ------------------------------------------------------------------------------------


def test_arcface_released_layout_and_depths():
    r50 = _meta_shapes(arcface.IResNet)
    assert r50["conv1.weight"] == (64, 3, 3, 3) and r50["prelu.weight"] == (64,)
    assert r50["layer1.0.downsample.0.weight"] == (64, 64, 1, 1)
    assert r50["layer3.13.bn3.running_var"] == (256,) and "layer3.14.bn1.weight" not in r50
    assert r50["layer4.2.prelu.weight"] == (512,) and r50["bn2.weight"] == (512,)
    assert r50["fc.weight"] == (512, 512 * 7 * 7) and r50["features.running_mean"] == (512,)
    with torch.device("meta"):
        r100 = arcface.IResNet(arcface.IResNetConfig(layers=arcface.ARCH_LAYERS["r100"]))
    cfg = arcface.config_from_state(r100.state_dict())
    assert cfg.arch == "r100" and cfg.widths == (64, 128, 256, 512) and cfg.embed_dim == 512
    assert len(r100.state_dict()) == 925  # conv/BN/PReLU tensors of insightface's r100


def test_arcface_round_trip_infers_depth(tmp_path):
    torch.manual_seed(1)
    cfg = arcface.IResNetConfig(layers=(1, 2, 1, 1), widths=(8, 16, 16, 32), embed_dim=24)
    model = _randomise_norms(arcface.IResNet(cfg))
    torch.save(released_state(model, arcface.released_key), tmp_path / "backbone.pth")
    loaded = arcface.load_arcface(tmp_path / "backbone.pth")
    assert loaded.config == cfg
    faces = torch.rand(3, 3, 112, 112) * 2 - 1
    with torch.no_grad():
        assert torch.equal(loaded(faces), model(faces))
    torch.save({"fc.weight": torch.zeros(2, 2)}, tmp_path / "other.pth")
    with pytest.raises(ValueError, match="not an insightface IResNet"):
        arcface.load_arcface(tmp_path / "other.pth")


def test_face_alignment_moves_points_onto_the_template():
    from lpm.bench.backends import align_face, similarity_transform

    rng = np.random.default_rng(0)
    ang, scale, shift = 0.3, 1.7, np.array([12.0, -5.0])
    rot = np.array([[np.cos(ang), -np.sin(ang)], [np.sin(ang), np.cos(ang)]])
    src = rng.uniform(0, 100, (5, 2))
    dst = scale * src @ rot.T + shift
    m = similarity_transform(src, dst)
    assert np.allclose(m[:, :2], scale * rot) and np.allclose(m[:, 2], shift)
    # a white dot at each source point lands on the template point
    img = np.zeros((200, 200, 3), np.uint8)
    pts = arcface.ARCFACE_TEMPLATE * 1.5 + 20
    for x, y in pts.round().astype(int):
        img[y - 1 : y + 2, x - 1 : x + 2] = 255
    out = align_face(img, pts, 112)
    for x, y in arcface.ARCFACE_TEMPLATE.round().astype(int):
        assert out[y, x].min() > 100


# --- I3D ----------------------------------------------------------------------------------------


def test_i3d_released_layout():
    shapes = _meta_shapes(i3d.InceptionI3d)
    assert shapes["Conv3d_1a_7x7.conv3d.weight"] == (64, 3, 7, 7, 7)
    assert shapes["Conv3d_2c_3x3.bn.running_mean"] == (192,)
    assert shapes["Mixed_3b.b1b.conv3d.weight"] == (128, 96, 3, 3, 3)
    assert shapes["Mixed_4b.b0.conv3d.weight"] == (192, 480, 1, 1, 1)
    assert shapes["Mixed_5c.b3b.conv3d.weight"] == (128, 832, 1, 1, 1)
    assert shapes["logits.conv3d.weight"] == (400, 1024, 1, 1, 1)
    assert shapes["logits.conv3d.bias"] == (400,) and "logits.bn.weight" not in shapes
    n = sum(int(np.prod(s)) for k, s in shapes.items() if "running" not in k and "num_b" not in k)
    assert 12.2e6 < n < 12.8e6  # I3D RGB: ~12.7 M parameters


def test_i3d_round_trip(tmp_path):
    torch.manual_seed(2)
    cfg = i3d.I3DConfig(width=0.125, num_classes=7)
    model = _randomise_norms(i3d.InceptionI3d(cfg))
    save_file(released_state(model, i3d.released_key), tmp_path / "i3d.safetensors")
    loaded = i3d.load_i3d(tmp_path / "i3d.safetensors", cfg)
    clips = torch.rand(1, 3, 16, 224, 224) * 2 - 1
    with torch.no_grad():
        out = loaded(clips)
        assert out.shape == (1, 7) and torch.equal(out, model(clips))
    with pytest.raises(ValueError, match="mis-shaped"):
        i3d.load_i3d(tmp_path / "i3d.safetensors")  # full widths: every conv is mis-shaped
