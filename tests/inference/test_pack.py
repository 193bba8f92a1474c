"""`lpm model pack`: bundles assembled from a trained VAE, a training run and encoders."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from lpm.cli.main import app
from lpm.inference import Pipeline
from lpm.inference.bundle import ModelBundle, load_encoders
from lpm.inference.pack import PackSettings, pack_bundle, resolve_checkpoint
from lpm.models.dit.checkpoint import save_lpm_checkpoint
from lpm.models.dit.model import LPMTransformer
from lpm.train.vae import VaeRecipe, run_vae_recipe

TINY = dict(dim=32, num_heads=2, ffn_dim=64, num_layers=2, freq_dim=32, text_dim=128,
            text_len=64, audio_dim=320)  # fmt: skip


@pytest.fixture(scope="module")
def vae_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("nano-vae")
    run_vae_recipe(VaeRecipe(kind="wan", base_dim=8, size=32, frames=5, batch_size=1,
                             image_steps=1, image_batch_size=1, vae_steps=1, decoder_steps=1,
                             stats_clips=1), out)  # fmt: skip
    return out


def _tiny_run(tmp_path, seed: int) -> tuple:
    """A training-run layout with one checkpoint whose EMA differs from its model."""
    from lpm.config import get_model_config

    cfg = get_model_config("lpm-nano").replace(**TINY)
    torch.manual_seed(seed)
    model, ema = LPMTransformer(cfg), LPMTransformer(cfg)
    step = tmp_path / "run" / "checkpoints" / "step-00000010"
    save_lpm_checkpoint(model, step)
    save_lpm_checkpoint(ema, step / "ema")
    (step / "trainer.json").write_text("{}")  # what marks a training checkpoint complete
    return tmp_path / "run", model, ema


def test_pack_encoders_then_trained_model_shares_the_text_encoder(vae_dir, tmp_path):
    enc = pack_bundle(PackSettings(name="enc", size=32), vae_dir=vae_dir, out=tmp_path / "enc")
    run, _model, ema = _tiny_run(tmp_path, 3)
    assert resolve_checkpoint(run) == run / "checkpoints" / "step-00000010" / "ema"
    final = pack_bundle(PackSettings(name="nano", size=32), vae_dir=vae_dir,
                        out=tmp_path / "nano", checkpoint=run, encoders=enc)  # fmt: skip
    bundle = ModelBundle.load(final)
    for k, v in ema.state_dict().items():  # fp16 storage: EMA weights within half precision
        torch.testing.assert_close(bundle.transformer.state_dict()[k], v, atol=2e-3, rtol=1e-2)
    _, _, text_a, _ = load_encoders(enc)
    _, _, text_b, _ = load_encoders(final)
    a, _ = text_a.encode(["The character nods."])
    b, _ = text_b.encode(["The character nods."])
    assert torch.equal(a, b)
    assert bundle.light_decoder is not None and bundle.spec.height == 32
    video = Pipeline(bundle).generate(
        torch.zeros(32, 32, 3, dtype=torch.uint8).numpy(), seconds=0.5, steps=2
    )
    assert video.frames.shape[1:] == (32, 32, 3)


def test_pack_cli_reports_errors_and_size(vae_dir, tmp_path):
    runner = CliRunner()
    res = runner.invoke(app, ["model", "pack", "--vae", str(vae_dir), "--out",
                              str(tmp_path / "b"), "--size", "32"])  # fmt: skip
    assert res.exit_code == 0, res.output
    assert "MB" in res.output
    res = runner.invoke(app, ["model", "pack", "--vae", str(vae_dir), "--out",
                              str(tmp_path / "b"), "--size", "32"])  # fmt: skip
    assert res.exit_code == 2 and "already exists" in res.output
    missing = str(tmp_path / "nope")
    res = runner.invoke(app, ["model", "pack", "--vae", str(vae_dir), "--out",
                              str(tmp_path / "c"), "--checkpoint", missing])  # fmt: skip
    assert res.exit_code == 2 and "does not exist" in res.output


def test_pack_with_the_nano_vae_generates(tmp_path):
    from lpm.models.vae import NanoVAE

    torch.manual_seed(0)
    NanoVAE().save(tmp_path / "v" / "vae")
    out = pack_bundle(PackSettings(name="n", size=32, segment_latents=6), vae_dir=tmp_path / "v",
                      out=tmp_path / "b")  # fmt: skip
    bundle = ModelBundle.load(out)
    assert isinstance(bundle.vae, NanoVAE) and bundle.light_decoder is None
    video = Pipeline(bundle).generate(
        torch.zeros(32, 32, 3, dtype=torch.uint8).numpy(), seconds=0.5, steps=2
    )
    assert video.frames.shape == (12, 32, 32, 3)
