"""Nano VAE + light decoder training on Stage clips (tiny, a few steps)."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from lpm.models.vae import load_wan_vae
from lpm.train.vae import VaeRecipe, run_vae_recipe, stage_batch


def test_vae_recipe_trains_measures_statistics_and_saves(tmp_path):
    recipe = VaeRecipe(kind="wan", base_dim=8, size=32, frames=5, batch_size=1, image_steps=2,
                       image_batch_size=2, vae_steps=3, decoder_steps=2, stats_clips=2)  # fmt: skip
    seen = []
    metrics = run_vae_recipe(recipe, tmp_path, progress=lambda i, n, m: seen.append((i, n, m)))
    assert seen[-1][:2] == (2, 2) and "l1" in seen[0][2]
    assert metrics["vae_psnr"] > 0 and metrics["light_psnr"] > 0
    vae = load_wan_vae(tmp_path / "vae")
    latents = vae.encode(stage_batch(recipe, 10_000_000))  # a statistics clip: ~unit variance
    assert latents.shape == (1, 16, 2, 4, 4)
    assert abs(latents.mean().item()) < 1.0 and 0.2 < latents.std().item() < 3.0
    card = json.loads((tmp_path / "vae_card.json").read_text())
    assert card["recipe"]["frames"] == 5
    assert (tmp_path / "light_decoder" / "model.safetensors").is_file()


def test_vae_recipe_validates():
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        VaeRecipe(frames=8)
    with pytest.raises(ValueError, match="multiple of 16"):
        VaeRecipe(size=40)
    with pytest.raises(ValueError, match="kind"):
        VaeRecipe(kind="sd")


def test_stage_batch_is_deterministic():
    recipe = VaeRecipe(size=32, frames=5, batch_size=1)
    assert torch.equal(stage_batch(recipe, 7), stage_batch(recipe, 7))
    assert not torch.equal(stage_batch(recipe, 7), stage_batch(recipe, 8))


def test_vae_recipe_saves_vae_first_and_reuses_it(tmp_path, monkeypatch):
    recipe = VaeRecipe(size=32, frames=5, batch_size=1, vae_steps=1, stats_clips=1)
    run_vae_recipe(recipe, tmp_path)
    before = (tmp_path / "vae" / "model.safetensors").read_bytes()

    import lpm.train.vae as vae_mod

    def no_training(*_a, **_k):
        raise AssertionError("the finished VAE must be reused, not retrained")

    monkeypatch.setattr(vae_mod, "train_nano_vae", no_training)
    run_vae_recipe(recipe, tmp_path)
    assert (tmp_path / "vae" / "model.safetensors").read_bytes() == before
    run_vae_recipe(dataclasses.replace(recipe, workers=0, decoder_steps=3), tmp_path)
    with pytest.raises(ValueError, match=r"another recipe \(lr: 0.001 -> 0.002; size: 32 -> 64\)"):
        run_vae_recipe(dataclasses.replace(recipe, lr=2e-3, size=64), tmp_path)
    assert (tmp_path / "vae" / "model.safetensors").read_bytes() == before


def test_cli_takes_paths_logs_every_step_and_names_bad_values(tmp_path):
    from typer.testing import CliRunner

    from lpm.cli.main import app
    from lpm.models.vae import NanoVAE

    NanoVAE().save(tmp_path / "base")
    small = ["--set", "size=32", "--set", "frames=5", "--set", "batch_size=1",
             "--set", "stats_clips=1", "--set", "vae_steps=2"]  # fmt: skip
    out = tmp_path / "tuned"
    result = CliRunner().invoke(app, ["train-vae", "--out", str(out), "--no-progress", *small,
                                      "--set", f"init={tmp_path / 'base'}",
                                      "--set", "freeze_encoder=true"])  # fmt: skip
    assert result.exit_code == 0, result.output
    lines = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in lines] == [1, 2] and {"l1", "temporal"} <= set(lines[0])
    assert json.loads((out / "vae_card.json").read_text())["recipe"]["init"].endswith("base")
    bad = CliRunner().invoke(app, ["train-vae", "--out", str(tmp_path / "x"), "--set", "lr=fast"])
    assert bad.exit_code != 0 and "not a number" in bad.output
