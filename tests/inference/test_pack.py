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


def test_swap_decoder_takes_a_decoder_over_the_same_encoder_only(tmp_path):
    from lpm.models.vae import NanoVAE, NanoVAEConfig, load_vae
    from lpm.models.vae.light_decoder import LightDecoderConfig

    torch.manual_seed(0)
    base = NanoVAE()
    base.save(tmp_path / "v" / "vae")
    pack_bundle(PackSettings(name="n", size=32, segment_latents=6), vae_dir=tmp_path / "v",
                out=tmp_path / "b")  # fmt: skip
    speech = NanoVAE(NanoVAEConfig(decoder=LightDecoderConfig(speech_dim=320)))
    speech.load_state_dict(load_vae(tmp_path / "b").state_dict(), strict=False)
    speech.save(tmp_path / "s" / "vae")
    runner = CliRunner()
    args = ["model", "swap-decoder", "--bundle", str(tmp_path / "b"), "--vae", str(tmp_path / "s")]
    result = runner.invoke(app, [*args, "--out", str(tmp_path / "b2")])
    assert result.exit_code == 0, result.output
    swapped = ModelBundle.load(tmp_path / "b2")
    assert swapped.vae.speech_dim == 320 and swapped.spec == ModelBundle.load(tmp_path / "b").spec
    torch.manual_seed(1)
    NanoVAE().save(tmp_path / "other" / "vae")  # another encoder: the DiT's latents would change
    result = runner.invoke(
        app,
        [
            "model",
            "swap-decoder",
            "--bundle",
            str(tmp_path / "b"),
            "--vae",
            str(tmp_path / "other"),
            "--out",
            str(tmp_path / "b3"),
        ],
    )
    assert result.exit_code == 2 and "freeze_encoder" in result.output
    assert not (tmp_path / "b3").exists()


def test_pack_online_stores_students_as_deltas_sharing_the_base(vae_dir, tmp_path):
    import json
    import shutil

    import numpy as np

    from lpm.inference.streaming import StreamingSession

    base_run, _model, ema = _tiny_run(tmp_path, 5)
    base = pack_bundle(PackSettings(name="nano", size=32), vae_dir=vae_dir,
                       out=tmp_path / "weights" / "nano", checkpoint=base_run)  # fmt: skip
    shipped = ModelBundle.load(base).transformer
    students = {}
    for role, seed in (("backbone", 1), ("refiner", 2)):  # a rank-2 move of one matrix each
        model = LPMTransformer(shipped.cfg.replace(name="nano-online", attention="chunk_causal"))
        model.load_state_dict(shipped.state_dict())
        g = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            w = model.blocks[0].self_attn.q.weight
            w += (
                0.05
                * torch.randn(w.shape[0], 2, generator=g)
                @ torch.randn(2, w.shape[1], generator=g)
            )
        save_lpm_checkpoint(model, tmp_path / role)
        students[role] = model
    (tmp_path / "refiner" / "recipe.json").write_text(
        json.dumps(
            {
                "backbone_timesteps": [1000.0, 600.0],
                "refiner_timestep": 400.0,
                "history_sigma": 0.05,
            }
        )  # fmt: skip
    )
    out = tmp_path / "weights" / "nano-online"
    result = CliRunner().invoke(app, ["model", "pack-online", "--base", str(base), "--backbone",
                                      str(tmp_path / "backbone"), "--refiner",
                                      str(tmp_path / "refiner"), "--out", str(out),
                                      "--rank", "2", "--refiner-timestep", "300"])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "100.0% of the change kept" in result.output
    spec = json.loads((out / "bundle.json").read_text())
    assert spec["paths"]["vae"] == "../nano/vae" and spec["online"]["refiner_timestep"] == 300.0
    assert spec["online"]["history_sigma"] == 0.05  # from the refiner run's recipe.json
    size = lambda d: sum(f.stat().st_size for f in d.rglob("*") if f.is_file())  # noqa: E731
    assert size(out) < 0.2 * size(base)
    # both bundles move together: relative paths only
    shutil.move(tmp_path / "weights", tmp_path / "moved")
    bundle = ModelBundle.load(tmp_path / "moved" / "nano-online")
    for role, module in (("backbone", bundle.transformer), ("refiner", bundle.refiner)):
        for k, v in students[role].state_dict().items():
            torch.testing.assert_close(module.state_dict()[k], v, atol=1e-3, rtol=1e-3)
    assert bundle.spec_online_schedule().backbone_timesteps == (1000.0, 600.0)
    session = StreamingSession(bundle, np.zeros((32, 32, 3), np.uint8), seed=0)
    chunk = session.step()
    assert np.isfinite(np.asarray(chunk.frames, dtype=np.float32)).all()
    # a base model is not a student
    result = CliRunner().invoke(app, ["model", "pack-online", "--base", str(tmp_path / "moved" /
                                      "nano"), "--backbone", str(base_run), "--refiner",
                                      str(base_run), "--out", str(tmp_path / "x")])  # fmt: skip
    assert result.exit_code == 2 and "chunk_causal" in result.output
