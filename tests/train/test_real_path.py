"""The path a lab takes to train a real scale, end to end at toy size.

Wan2.1 weights converted by `lpm convert wan`; a bundle of the Wan VAE, umT5 and wav2vec2 read
from their own local folders (`lpm model link`); `lpm data encode` of Stage clips with that
bundle; the `base-1.3b` recipe fine-tuning the converted weights on the cache; the
`online-1.3b` recipe distilling the Base bundle in its four stages; generation offline and
online through the real encoders. Only the widths shrink (``--set model.dim=...``): every class,
loader and command is the one a 1.3B run uses.
"""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from lpm.cli.main import app
from lpm.config import get_model_config
from lpm.data.stage.writer import StageDatasetConfig, build_dataset
from lpm.models.dit.checkpoint import load_lpm_checkpoint, save_lpm_checkpoint
from lpm.models.dit.model import LPMTransformer
from lpm.models.vae import WanVAEConfig, build_wan_vae
from lpm.parallel import DistInfo
from lpm.train import Trainer, apply_overrides, get_recipe

diffusers = pytest.importorskip("diffusers")
transformers = pytest.importorskip("transformers")

#: base-1.3b's model at toy width (the recipe keeps every other field of lpm-1.3b).
SHRINK = {"dim": 32, "num_heads": 2, "ffn_dim": 64, "num_layers": 2, "freq_dim": 32,
          "text_dim": 32, "text_len": 16, "audio_dim": 32}  # fmt: skip


def _umt5(root):
    from transformers import UMT5Config, UMT5EncoderModel

    from lpm.models.text import word_tokenizer

    tokenizer = word_tokenizer(["the", "character", "speaks", "listens", "nods", "a"])
    tokenizer.save_pretrained(root)
    cfg = UMT5Config(vocab_size=tokenizer.vocab_size, d_model=SHRINK["text_dim"], d_kv=8, d_ff=64,
                     num_layers=2, num_heads=4, relative_attention_num_buckets=8)  # fmt: skip
    UMT5EncoderModel(cfg).save_pretrained(root)


def _wav2vec2(root):
    from transformers import Wav2Vec2Config, Wav2Vec2Model

    cfg = Wav2Vec2Config(
        hidden_size=SHRINK["audio_dim"], num_hidden_layers=2, num_attention_heads=2,
        intermediate_size=64, conv_dim=(16,) * 7, num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2, vocab_size=8,
    )  # fmt: skip
    Wav2Vec2Model(cfg).save_pretrained(root)


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    """Folders as a lab has them: Wan2.1-T2V (diffusers layout), the Wan VAE, umT5, wav2vec2,
    and a Stage dataset; then the converted start, the bundle and the encoded cache."""
    root = tmp_path_factory.mktemp("lab")
    torch.manual_seed(0)
    wan = diffusers.WanTransformer3DModel(
        patch_size=(1, 2, 2), num_attention_heads=SHRINK["num_heads"],
        attention_head_dim=SHRINK["dim"] // SHRINK["num_heads"], in_channels=16,
        out_channels=16, text_dim=SHRINK["text_dim"], freq_dim=SHRINK["freq_dim"],
        ffn_dim=SHRINK["ffn_dim"], num_layers=SHRINK["num_layers"],
    )  # fmt: skip
    wan.save_pretrained(root / "Wan2.1-T2V")
    build_wan_vae(WanVAEConfig.tiny()).model.save_pretrained(root / "Wan2.1-VAE")
    _umt5(root / "umt5")
    _wav2vec2(root / "wav2vec2")
    build_dataset(StageDatasetConfig(out=root / "data", clips=4, seconds=2.0, resolution=64,
                                     seed=3, backend="formant"), progress=False)  # fmt: skip

    runner = CliRunner()
    config = root / "lpm-1.3b-toy.json"
    config.write_text(get_model_config("lpm-1.3b").replace(**SHRINK).to_json())
    converted = runner.invoke(app, [
        "convert", "wan", "--src", str(root / "Wan2.1-T2V"), "--out", str(root / "init"),
        "--config", str(config),
    ])  # fmt: skip
    assert converted.exit_code == 0, converted.output

    linked = runner.invoke(app, ["model", "link", *_link_args(root, root / "init"),
                                 "--out", str(root / "bundle")])  # fmt: skip
    assert linked.exit_code == 0, linked.output
    bundle = root / "bundle"
    assert [f.name for f in bundle.iterdir()] == ["bundle.json"]  # nothing copied
    encoded = runner.invoke(app, [
        "data", "encode", "--data", str(root / "data"), "--out", str(root / "cache"),
        "--model", str(bundle), "--no-progress",
    ])  # fmt: skip
    assert encoded.exit_code == 0, encoded.output
    return root


def _link_args(root, transformer) -> list[str]:
    return ["--transformer", str(transformer), "--vae", str(root / "Wan2.1-VAE"),
            "--text-encoder", str(root / "umt5"), "--audio-encoder", str(root / "wav2vec2"),
            "--height", "64", "--width", "64", "--name", "lpm-1.3b-toy"]  # fmt: skip


def _recipe(lab, *extra: str):
    sets = [f"model.{k}={v}" for k, v in SHRINK.items()] + [
        f"init={lab / 'init'}", f"data_path={lab / 'cache'}", "latent_shape=(4,8,8)",
        "batch_size=2", "steps=3", "log_every=1", "deterministic=true",
        "stages.speak.categories=[speak,silence,conversation,listen]", *extra,
    ]  # fmt: skip
    return apply_overrides(get_recipe("base-1.3b"), sets)


def test_base_recipe_fine_tunes_converted_wan_weights_on_the_real_encoders_cache(lab, tmp_path):
    recipe = _recipe(lab)
    assert recipe.micro_batch_size == 1 and recipe.activation_checkpointing
    trainer = Trainer(recipe, tmp_path / "run", dist_info=DistInfo(), progress=False)
    sample = trainer.dataset[0]
    assert sample.latents.shape == (16, 4, 8, 8)  # the Wan VAE's latents of 64-px frames
    assert sample.text.shape == (SHRINK["text_len"], SHRINK["text_dim"])  # umT5 features
    assert sample.speak_audio.shape == (16, SHRINK["audio_dim"])  # wav2vec2, 4 per latent
    start = load_lpm_checkpoint(lab / "init").state_dict()
    for name, value in trainer.model.state_dict().items():
        torch.testing.assert_close(value, start[name], rtol=0, atol=0, msg=name)
    result = trainer.fit()
    assert result.steps == 3 and math.isfinite(result.final_loss)
    records = [json.loads(x) for x in (tmp_path / "run/metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3] and records[-1]["stage"] == "speak"
    tuned = load_lpm_checkpoint(result.checkpoint)
    assert tuned.cfg.name == "lpm-1.3b" and tuned.cfg.dim == SHRINK["dim"]
    moved = [n for n, v in tuned.state_dict().items() if not torch.equal(v, start[n])]
    assert moved  # the fine-tune changed the weights it started from


@pytest.mark.multiproc
def test_base_recipe_under_torchrun_matches_one_process(lab, tmp_path):
    """`lpm train --recipe base-1.3b` under torchrun on 2 gloo ranks (FSDP2 + activation
    checkpointing + micro-batches of 1, from the converted weights, on the real encoders'
    cache) trains what one process trains on the same global batch."""
    import shutil
    import sys

    from conftest import curve, final_weights, run_cli

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    sets = [f"model.{k}={v}" for k, v in SHRINK.items()] + [
        f"init={lab / 'init'}", f"data_path={lab / 'cache'}", "latent_shape=(4,8,8)",
        "batch_size=4", "steps=4", "log_every=1", "deterministic=true", "checkpoint_every=2",
        "stages.speak.categories=[speak,silence,conversation,listen]",
    ]  # fmt: skip
    args = ["train", "--recipe", "base-1.3b", "--no-progress"]
    for item in sets:
        args += ["--set", item]
    one, two = tmp_path / "one", tmp_path / "two"
    run_cli([sys.executable, "-m", "lpm.cli.main", *args, "--out", str(one)], timeout=240)
    launch = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "lpm.cli.main"]
    run_cli([*launch, *args, "--out", str(two)], timeout=240)
    assert json.loads((two / "run.json").read_text())["world_size"] == 2
    a, b = curve(one), curve(two)
    assert [r[:2] for r in a] == [r[:2] for r in b] and len(a) == 4
    for x, y in zip(a, b, strict=True):
        assert y[2] == pytest.approx(x[2], rel=1e-5), (x, y)
    w1, w2 = final_weights(one), final_weights(two)
    assert max((w1[k] - w2[k]).abs().max().item() for k in w1) <= 1e-5


def test_the_same_recipe_on_a_nano_cache_is_refused_by_name(lab, tmp_path):
    """A cache encoded with other encoders (text 32 wide, here read as 48) is named before any
    model is built."""
    recipe = _recipe(lab, "model.text_dim=48")
    with pytest.raises(ValueError, match=r"text feature width 32 \(the model reads 48\)"):
        Trainer(recipe, tmp_path / "run", dist_info=DistInfo(), progress=False)


def test_the_fine_tuned_weights_generate_through_the_real_encoders(lab, tmp_path):
    """`lpm generate --model` a bundle of the fine-tuned EMA weights, the Wan VAE, umT5 and
    wav2vec2: an H.264 + AAC mp4 of the asked length."""
    run = tmp_path / "run"
    Trainer(_recipe(lab), run, dist_info=DistInfo(), progress=False).fit()
    bundle = tmp_path / "bundle"
    runner = CliRunner()
    linked = runner.invoke(app, ["model", "link", *_link_args(lab, run), "--out", str(bundle),
                                 "--segment-latents", "8", "--steps", "2"])  # fmt: skip
    assert linked.exit_code == 0, linked.output
    ema = sorted((run / "checkpoints").glob("step-*"))[-1] / "ema"  # a run links its EMA
    assert json.loads((bundle / "bundle.json").read_text())["paths"]["transformer"] == str(ema)
    _generate_and_check(lab / "data/clips/000000", ["--model", str(bundle)], 1, tmp_path)


def test_link_names_every_component_that_does_not_fit_and_writes_nothing(lab, tmp_path):
    config = get_model_config("lpm-1.3b").replace(**{**SHRINK, "text_dim": 48, "audio_dim": 24})
    wide = tmp_path / "wide"
    save_lpm_checkpoint(LPMTransformer(config), wide)
    out = tmp_path / "bundle"
    result = CliRunner().invoke(app, ["model", "link", *_link_args(lab, wide), "--out", str(out)])
    assert result.exit_code == 2
    assert "text encoder width 32, the transformer reads 48" in result.output
    assert "audio encoder width 32, the transformer reads 24" in result.output
    assert "Traceback" not in result.output and not out.exists()
    swapped = _link_args(lab, lab / "init")
    swapped[swapped.index("--vae") + 1] = str(lab / "umt5")  # a text encoder given as the VAE
    result = CliRunner().invoke(app, ["model", "link", *swapped, "--out", str(out)])
    assert result.exit_code == 2 and "not an AutoencoderKLWan" in result.output
    odd = _link_args(lab, lab / "init")
    odd[odd.index("--height") + 1] = "60"
    result = CliRunner().invoke(app, ["model", "link", *odd, "--out", str(out)])
    assert result.exit_code == 2 and "multiples of 16" in result.output and not out.exists()


def test_online_recipe_distils_the_linked_base_in_four_stages_and_streams(lab, tmp_path):
    """`lpm distill --recipe online-1.3b` with the linked Base bundle as teacher: trajectories,
    stages 1-4, `lpm model pack-online` against the linked base, `lpm generate --online`."""

    from lpm.cli.distill import app as distill_app
    from lpm.distill.recipes import apply_overrides as apply_distill_overrides
    from lpm.distill.recipes import get_recipe as get_distill_recipe
    from lpm.distill.trainer import DistillTrainer

    runner = CliRunner()
    sets = ["--set", f"data_path={lab / 'cache'}", "--set", "chunks=2", "--set",
            "latent_hw=(8,8)", "--set", "teacher_steps=2", "--set", "batch_size=2", "--set",
            "stage_steps=2,2,2,2", "--set", "critic_updates=1", "--set", "log_every=1"]  # fmt: skip
    teacher = ["--recipe", "online-1.3b", "--set", f"teacher={lab / 'bundle'}", *sets]
    without = apply_distill_overrides(get_distill_recipe("online-1.3b"),
                                      [f"data_path={lab / 'cache'}"])  # fmt: skip
    with pytest.raises(ValueError, match=r"distils a trained base-1\.3b run.*--set teacher=DIR"):
        DistillTrainer(without, tmp_path / "none", dist_info=DistInfo(), progress=False)
    assert not (tmp_path / "none").exists()
    traj = tmp_path / "traj"
    made = runner.invoke(distill_app, ["trajectories", *teacher, "--out", str(traj)])
    assert made.exit_code == 0, made.output
    previous = {1: [], 2: ["--set", f"init={tmp_path / 's1'}"],
                3: ["--set", f"init={tmp_path / 's2'}"],
                4: ["--set", f"backbone={tmp_path / 's3'}"]}  # fmt: skip
    for stage in (1, 2, 3, 4):
        extra = ["--set", f"trajectories={traj}"] if stage <= 2 else []
        done = runner.invoke(distill_app, [*teacher, "--stage", str(stage), *extra,
                                           *previous[stage], "--out", str(tmp_path / f"s{stage}"),
                                           "--no-progress"])  # fmt: skip
        assert done.exit_code == 0, (stage, done.output)
        records = (tmp_path / f"s{stage}/metrics.jsonl").read_text().splitlines()
        assert len(records) == 2 and all(math.isfinite(json.loads(r)["loss"]) for r in records)
    online = tmp_path / "online"
    packed = runner.invoke(app, [
        "model", "pack-online", "--base", str(lab / "bundle"), "--backbone", str(tmp_path / "s3"),
        "--refiner", str(tmp_path / "s4"), "--rank", "4", "--name", "lpm-1.3b-toy-online",
        "--out", str(online),
    ])  # fmt: skip
    assert packed.exit_code == 0, packed.output
    _generate_and_check(lab / "data/clips/000001", ["--online", "--model", str(online)], 2,
                        tmp_path)  # fmt: skip


def _generate_and_check(clip, model_args: list[str], seconds: int, tmp_path) -> None:
    """`lpm generate` a clip's character speaking its audio: an H.264 + AAC mp4 of 24 fps."""
    import av

    from lpm.media import read_video

    out = tmp_path / "out.mp4"
    result = CliRunner().invoke(app, [
        "generate", *model_args, "--image", str(clip / "refs/global_0.png"),
        "--speak", str(clip / "speak.wav"), "--seconds", str(seconds), "--out", str(out),
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    frames, fps = read_video(out)
    assert fps == 24 and frames.shape == (24 * seconds, 64, 64, 3)
    with av.open(str(out)) as container:
        codecs = {s.type: s.codec_context.name for s in container.streams}
    assert codecs == {"video": "h264", "audio": "aac"}
