"""Training at the real scales: gradient accumulation, the base-1.3b / base-17b recipes, and the
checks that stop a run before it builds a large model on data or weights it cannot use."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from conftest import cli_env

from lpm.config import get_model_config
from lpm.parallel import DistInfo
from lpm.train import SyntheticDataset, Trainer, apply_overrides, get_recipe

SINGLE = DistInfo()
#: Same tolerances as FSDP2 against one process: only the order of the gradient sums differs.
LOSS_RTOL = 1e-6
WEIGHT_ATOL = 1e-5


def tiny(*sets: str):
    return apply_overrides(get_recipe("test-tiny"), ["deterministic=true", *sets])


def _fit(recipe, run):
    trainer = Trainer(recipe, run, dist_info=SINGLE, progress=False)
    trainer.fit()
    return _records(run), trainer


def _records(run):
    return [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]


@pytest.mark.parametrize("micro", [1, 3])
def test_micro_batches_train_the_same_model_as_the_whole_batch(tmp_path, micro):
    """Batch 4 in pieces of 1 (four backward passes) or of 3 and 1 (uneven): every step's loss
    and learning rate, and the final model and EMA, equal those of batch 4 at once."""
    whole, a = _fit(tiny(), tmp_path / "whole")
    b = Trainer(tiny(f"micro_batch_size={micro}"), tmp_path / "pieces", dist_info=SINGLE,
                progress=False)  # fmt: skip
    forwards = []
    b.model.register_forward_pre_hook(lambda _module, args: forwards.append(len(args[0])))
    b.fit()
    pieces = _records(tmp_path / "pieces")
    assert len(whole) == len(pieces) == 24  # every step of all four curriculum stages
    for r, s in zip(whole, pieces, strict=True):
        assert (r["step"], r["stage"], r["lr"]) == (s["step"], s["stage"], s["lr"])
        assert s["loss"] == pytest.approx(r["loss"], rel=LOSS_RTOL), r["step"]
        assert s["grad_norm"] == pytest.approx(r["grad_norm"], rel=1e-5), r["step"]
    for x, y in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert (x - y).abs().max().item() <= WEIGHT_ATOL
    for x, y in zip(a.ema.shadow, b.ema.shadow, strict=True):
        assert (x - y).abs().max().item() <= WEIGHT_ATOL
    assert forwards == ([1, 1, 1, 1] if micro == 1 else [3, 1]) * 24  # the pieces ran apart


def test_micro_batch_size_is_validated():
    with pytest.raises(ValueError, match="micro_batch_size=-1 must be >= 0"):
        tiny("micro_batch_size=-1")


def test_real_scale_recipes_are_480p_five_second_clips_of_their_scale():
    for name, model, scale in (("base-1.3b", "lpm-1.3b", 1.6e9), ("base-17b", "lpm-17b", 17e9)):
        recipe = get_recipe(name)
        cfg = recipe.model_config()
        assert recipe.model == model and cfg.name == model
        frames, h, w = recipe.latent_shape
        assert (h * 8, w * 8) == (480, 832)  # the Wan VAE's 8x spatial compression
        assert frames / (cfg.fps / cfg.temporal_compression) == 5.0  # seconds
        _, ph, pw = cfg.patch_size
        assert frames * (h // ph) * (w // pw) == 46_800  # tokens per clip
        assert recipe.mixed_precision == "bf16" and recipe.activation_checkpointing
        assert recipe.micro_batch_size == 1 and recipe.batch_size >= 32
        assert [s.name for s in recipe.stages] == ["speak", "listen", "identity", "long"]
        assert recipe.starts_from and "Wan2.1" in recipe.starts_from and not recipe.init
        assert (cfg.text_dim, cfg.audio_dim) == (4096, 1024)  # umT5-XXL, wav2vec2-large
        assert abs(_parameters(model) - scale) / scale < 0.1


def _parameters(config: str) -> float:
    from lpm.models.dit.model import LPMTransformer

    with torch.device("meta"):
        model = LPMTransformer(get_model_config(config))
    return float(sum(p.numel() for p in model.parameters()))


def test_a_real_scale_run_without_its_start_weights_stops_before_building_anything(tmp_path):
    recipe = apply_overrides(get_recipe("base-17b"), [f"data_path={tmp_path / 'cache'}"])
    with pytest.raises(ValueError, match=r"fine-tunes Wan2\.1-I2V-14B.*--set init=DIR"):
        Trainer(recipe, tmp_path / "run", dist_info=SINGLE, progress=False)
    assert not (tmp_path / "run").exists()
    # opting out of the start weights reaches the data, which is then what is missing
    bare = apply_overrides(recipe, ["starts_from="])
    with pytest.raises(FileNotFoundError):
        Trainer(bare, tmp_path / "run", dist_info=SINGLE, progress=False)


def test_data_encoded_for_another_scale_is_named_before_the_model_is_built(tmp_path):
    recipe = tiny()
    cfg = recipe.model_config().replace(text_dim=8, audio_dim=12)
    data = SyntheticDataset(cfg, size=8, latent_shape=(6, 4, 4))
    with pytest.raises(ValueError) as err:
        Trainer(recipe, tmp_path / "run", dist_info=SINGLE, progress=False, dataset=data)
    message = str(err.value)
    for part in (
        "text feature width 8 (the model reads 16)",
        "speak-audio feature width 12 (the model reads 16)",
        "lpm data encode",
    ):
        assert part in message
    assert "latent channels" not in message
    assert not (tmp_path / "run").exists()


def test_cli_shows_the_real_scale_recipe_and_explains_a_missing_start(tmp_path):
    cmd = [sys.executable, "-m", "lpm.cli.main", "train", "--recipe", "base-1.3b"]
    shown = subprocess.run([*cmd, "--show"], env=cli_env(), capture_output=True, text=True,
                           timeout=120)  # fmt: skip
    assert shown.returncode == 0, shown.stderr
    resolved = json.loads(shown.stdout)
    assert resolved["model"] == "lpm-1.3b" and resolved["latent_shape"] == [30, 60, 104]
    run = subprocess.run(
        [*cmd, "--set", f"data_path={tmp_path}", "--out", str(tmp_path / "run"), "--no-progress"],
        env=cli_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode != 0
    assert "--set init=DIR" in run.stderr and "Traceback" not in run.stderr
    assert not (tmp_path / "run").exists()


@pytest.mark.multiproc
def test_a_bad_start_under_torchrun_stops_every_rank_with_the_message(tmp_path):
    """Only rank 0 reads the start weights under FSDP2; when they are missing, every rank stops
    with the message instead of waiting for values that never come."""
    import shutil

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "lpm.cli.main", "train",
           "--recipe", "test-tiny", "--set", f"init={tmp_path / 'missing'}", "--out",
           str(tmp_path / "run"), "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=180)
    assert proc.returncode != 0
    said = " ".join(w for w in (proc.stdout + proc.stderr).split() if w != "│")  # box edges
    assert said.count("is neither an LPM checkpoint") == 2  # once per rank, no traceback
    assert not (tmp_path / "run" / "checkpoints").exists()
