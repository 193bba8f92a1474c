"""LPIPS: loader round trip with tiny random weights in released names; clear errors."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import save_file

from lpm.distill.lpips import LPIPS, LPIPSConfig, load_lpips

TINY = {"alex": (4, 6, 8, 6, 6), "vgg16": (4, 4, 6, 6, 8)}


def _released_names(model: LPIPS, trunk: str) -> tuple[dict, dict]:
    """(trunk, heads) state dicts named as torchvision and the LPIPS release name them."""
    state = model.state_dict()
    trunk_sd = {k: v.clone() for k, v in state.items() if k.startswith("features.")}
    trunk_sd["classifier.1.weight"] = torch.zeros(3, 3)  # unused torchvision entries are skipped
    heads = {f"lin{k}.model.1.weight": state[f"heads.{k}.weight"].clone() for k in range(5)}
    return trunk_sd, heads


@pytest.mark.parametrize("trunk", ["alex", "vgg16"])
def test_round_trip_from_safetensors_and_pth(tmp_path, trunk):
    torch.manual_seed(0)
    cfg = LPIPSConfig(trunk=trunk, widths=TINY[trunk])
    model = LPIPS(cfg)
    for p in model.parameters():
        torch.nn.init.uniform_(p, 0.0, 0.2)
    trunk_sd, heads = _released_names(model, trunk)
    save_file(trunk_sd, str(tmp_path / "trunk.safetensors"))
    torch.save(heads, tmp_path / "heads.pth")
    loaded = load_lpips(f"{tmp_path / 'trunk.safetensors'},{tmp_path / 'heads.pth'}", cfg)
    assert all(not p.requires_grad for p in loaded.parameters())
    x, y = torch.rand(2, 3, 64, 64) * 2 - 1, torch.rand(2, 3, 64, 64) * 2 - 1
    with torch.no_grad():
        d = loaded(x, y)
        assert torch.equal(d, model(x, y))
        assert d.shape == (2,) and (d > 0).all()
        assert loaded(x, x).abs().max() == 0


def test_missing_and_mismatched_weights_are_named(tmp_path):
    cfg = LPIPSConfig(trunk="alex", widths=TINY["alex"])
    trunk_sd, heads = _released_names(LPIPS(cfg), "alex")
    save_file(trunk_sd, str(tmp_path / "trunk.safetensors"))
    save_file(heads, str(tmp_path / "heads.safetensors"))
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_lpips([tmp_path / "nope.safetensors"], cfg)
    with pytest.raises(ValueError, match=r"missing \['heads.0.weight'"):
        load_lpips([tmp_path / "trunk.safetensors"], cfg)
    with pytest.raises(ValueError, match="wrong shapes"):  # tiny weights, standard AlexNet
        load_lpips([tmp_path / "trunk.safetensors", tmp_path / "heads.safetensors"])
    with pytest.raises(ValueError, match="no LPIPS weight files"):
        load_lpips("", cfg)
    with pytest.raises(ValueError, match="trunk"):
        LPIPSConfig(trunk="resnet")


def test_stage2_with_lpips_on_decoded_frames(tmp_path, trajectories):
    """Stage 2 with the LPIPS perceptual loss: a bundle's VAE decodes, AlexNet-LPIPS compares."""
    from typer.testing import CliRunner

    from lpm.cli.main import app
    from tests.inference.test_pipeline import tiny_bundle

    tiny_bundle(decoder="vae").save(tmp_path / "bundle")
    torch.manual_seed(0)
    lpips = LPIPS(LPIPSConfig(trunk="alex"))  # full-size AlexNet trunk, random weights
    for p in lpips.parameters():
        torch.nn.init.uniform_(p, 0.0, 0.05)
    save_file(lpips.state_dict(), str(tmp_path / "lpips.safetensors"))
    args = ["distill", "--recipe", "test-tiny", "--stage", "2", "--out", str(tmp_path / "run"),
            "--no-progress", "--set", f"trajectories={trajectories}", "--set", "perceptual=lpips",
            "--set", f"lpips_weights={tmp_path / 'lpips.safetensors'}",
            "--set", f"decoder={tmp_path / 'bundle'}", "--set", "stage_steps=4,2,4,4"]  # fmt: skip
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    records = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").open()]
    assert len(records) == 2 and all(r["perceptual"] > 0 for r in records)

    missing = CliRunner().invoke(app, [*args[:-2], "--set", "decoder="])
    assert missing.exit_code != 0 and "decoder" in missing.output
