"""`lpm data encode`: Stage clips -> feature cache -> training samples; bad clips reported."""

from __future__ import annotations

import json
import math

import pytest
import torch
from typer.testing import CliRunner

from lpm.cli.main import app
from lpm.data.encode import ClipEncoder, ClipError, EncodeConfig, encode_dataset
from lpm.data.stage.schema import ACTIONS
from lpm.data.stage.writer import StageDatasetConfig, build_dataset
from lpm.inference.bundle import load_encoders
from lpm.parallel.distributed import DistInfo
from lpm.train.batch import collate
from lpm.train.cache import CachedDataset
from lpm.train.recipes import apply_overrides, get_recipe
from lpm.train.trainer import Trainer
from lpm.train.trainer import build_dataset as build_dataset_for
from tests.inference.test_pipeline import tiny_bundle


@pytest.fixture(scope="module")
def stage_data(tmp_path_factory):
    root = tmp_path_factory.mktemp("stage")
    build_dataset(
        StageDatasetConfig(
            out=root / "data", clips=3, seconds=1.0, resolution=64, seed=5, backend="formant"
        ),
        progress=False,
    )
    tiny_bundle().save(root / "bundle")
    return root


def encoder(bundle_dir):
    spec, vae, text, audio = load_encoders(bundle_dir)
    return ClipEncoder(vae, text, audio, spec.sample_rate)


def test_encode_cache_trains_and_resumes(stage_data, tmp_path):
    enc = encoder(stage_data / "bundle")
    cfg = EncodeConfig(data=stage_data / "data", out=tmp_path / "cache", shard_clips=2)
    report = encode_dataset(cfg, enc)
    assert report.encoded == 3 and not report.skipped
    assert len(list((tmp_path / "cache" / "shards").glob("*.safetensors"))) == 2
    again = encode_dataset(cfg, enc)
    assert again.encoded == 0 and again.already_done == 3

    data = CachedDataset(tmp_path / "cache", frames=4)
    sample = data[0]
    assert sample.latents.shape == (16, 4, 8, 8)
    assert sample.speak_audio.shape == (16, 32) and sample.listen_audio.shape == (16, 32)
    assert ("global", 0) in sample.reference_kinds and len(sample.reference_kinds) == 13
    assert sample.references.shape == (16, 13, 8, 8)
    assert torch.equal(data[1].latents, CachedDataset(tmp_path / "cache", frames=4)[1].latents)
    # Timed cues: encoded prompts and the cue of each latent frame of the crop.
    for i in range(len(data)):
        s = data[i]
        n_cues = s.cue_text.shape[0]
        assert s.cue_text.shape[1:] == (64, 32) and s.cue_mask.shape == (n_cues, 64)
        assert s.cue_index.shape == (4,) and int(s.cue_index.max()) < n_cues
    batch = collate([data[i] for i in range(len(data))])
    most = max(data[i].cue_text.shape[0] for i in range(len(data)))
    assert most > 0 and batch.cues.features.shape == (3, most, 64, 32)
    assert batch.cues.index.shape == (3, 4)

    recipe = apply_overrides(get_recipe("test-speak"), [
        "data=cache", f"data_path={tmp_path / 'cache'}", "latent_shape=[4,8,8]",
        "model.text_dim=32", "model.audio_dim=32", "batch_size=2", "stages.speak.steps=2",
        "stages.speak.categories=[speak,silence,conversation,listen]", "model.text_cues=true",
    ])  # fmt: skip
    result = Trainer(recipe, tmp_path / "run", dist_info=DistInfo(), progress=False).fit()
    assert result.steps == 2 and torch.isfinite(torch.tensor(result.final_loss))

    # Action balancing reads each clip's labelled actions from the encoded Stage dataset.
    for i in range(len(data)):
        clip = stage_data / "data" / data.entries[i]["clip"]
        labels = json.loads((clip / "labels.json").read_text())["fields"]["action"]
        assert data.actions(i) == {a for a in labels if a != "none"}
    balanced = apply_overrides(recipe, ["balance_actions=true"])
    trainer = Trainer(balanced, tmp_path / "run-balanced", dist_info=DistInfo(), progress=False)
    assert len(trainer.sampler.pools[0]) >= len(data)
    assert trainer.fit().steps == 2
    # Cue-action labels: each cue's labelled action, from the frame the encoder timed it by.
    labelled = CachedDataset(tmp_path / "cache", frames=4, cue_actions=True)
    for i in range(len(labelled)):
        clip = stage_data / "data" / labelled.entries[i]["clip"]
        labels = json.loads((clip / "labels.json").read_text())["fields"]["action"]
        full_index = labelled._get(
            labelled.entries[i]["shard"], f"{labelled.entries[i]['key']}.cue_index"
        )
        want = [-1] * labelled[i].cue_text.shape[0]
        for f, c in enumerate(full_index.tolist()):
            if c >= 0 and want[c] < 0:
                want[c] = ACTIONS.index(labels[min(4 * f + 2, len(labels) - 1)])
        assert labelled[i].cue_action.tolist() == want
    assert collate([labelled[i] for i in range(3)]).cues.actions.shape == (3, most)
    head = apply_overrides(recipe, ["model.cue_action_classes=9", "cue_action_weight=0.5"])
    trainer = Trainer(head, tmp_path / "run-head", dist_info=DistInfo(), progress=False)
    assert trainer.fit().steps == 2
    records = [
        json.loads(ln) for ln in (tmp_path / "run-head" / "metrics.jsonl").read_text().splitlines()
    ]
    steps = [r for r in records if "cue_action_loss" in r]
    assert (tmp_path / "run-head" / "cue_action_loss.png").is_file()
    # the head's loss is there and positive (the tiny clips' cues are labelled)
    assert steps and all(0 < r["cue_action_loss"] < math.inf for r in steps)
    assert collate([labelled[0]]).to("cpu").cues.actions is not None
    with pytest.raises(ValueError, match="cue_action_classes"):
        apply_overrides(recipe, ["cue_action_weight=0.5"])
    fresh = CachedDataset(tmp_path / "cache", frames=4)  # labels are read once per clip
    labels = stage_data / "data" / fresh.entries[0]["clip"] / "labels.json"
    labels.rename(labels.with_suffix(".moved"))
    try:
        with pytest.raises(FileNotFoundError, match="action labels are read from the Stage"):
            fresh.actions(0)
    finally:
        labels.with_suffix(".moved").rename(labels)


def test_mirrored_clips(stage_data, tmp_path):
    """--mirror: each clip also flipped left to right, with sides swapped in words and labels."""
    import shutil

    import numpy as np

    from lpm.data.encode import _sided, _to_video
    from lpm.media import read_image, read_video

    assert _sided("Turns its head to the left; the right eye, leftover", True) == (
        "Turns its head to the right; the left eye, leftover"
    )
    assert _sided("turns left", False) == "turns left"
    data = tmp_path / "data"
    shutil.copytree(stage_data / "data", data)
    clip = data / "clips" / "000000"
    labels = json.loads((clip / "labels.json").read_text())
    n = len(labels["fields"]["action"])
    labels["fields"]["action"] = ["turn_left"] * (n // 2) + ["turn_right"] * (n - n // 2)
    (clip / "labels.json").write_text(json.dumps(labels))
    captions = json.loads((clip / "captions.json").read_text())
    captions["cues"] = [{"start_frame": 0, "end_frame": n, "text": "It looks to the left."}]
    (clip / "captions.json").write_text(json.dumps(captions))

    enc = encoder(stage_data / "bundle")
    cfg = EncodeConfig(data=data, out=tmp_path / "cache", mirror=True)
    assert encode_dataset(cfg, enc).encoded == 6
    again = encode_dataset(cfg, enc)
    assert again.encoded == 0 and again.already_done == 6
    with pytest.raises(ValueError, match="other settings"):
        encode_dataset(EncodeConfig(data=data, out=tmp_path / "cache"), enc)

    cache = CachedDataset(tmp_path / "cache", frames=4, cue_actions=True)
    find = {(e["clip"], bool(e.get("mirror"))): i for i, e in enumerate(cache.entries)}
    plain, mirrored = find[("clips/000000", False)], find[("clips/000000", True)]
    get = lambda i, name: cache._get(cache.entries[i]["shard"], f"{cache.entries[i]['key']}.{name}")
    frames, _ = read_video(clip / "video.mp4")
    want = enc.vae.encode(_to_video(np.ascontiguousarray(frames[3:, :, ::-1])))[0]
    assert torch.allclose(get(mirrored, "latents"), want, atol=1e-5)
    assert not torch.allclose(get(plain, "latents"), want, atol=1e-3)
    # the mirror of the view from the left is the view from the right
    kinds = [tuple(k) for k in cache.entries[mirrored]["kinds"]]
    left = kinds.index(("body", 1))
    right_view = read_image(clip / "refs" / "view_right.png")[:, ::-1]
    want_ref = enc.vae.encode(_to_video(np.ascontiguousarray(right_view)[None]))[0, :, 0]
    assert torch.allclose(get(mirrored, "references")[:, left], want_ref, atol=1e-4)
    # the cue is said of the other side; so are the turn labels
    text, mask = enc.text.encode(["It looks to the right."])
    assert torch.allclose(get(mirrored, "cue_text")[0], text[0].float(), atol=1e-5)
    assert cache._frame_actions(mirrored) == [
        {"turn_left": "turn_right", "turn_right": "turn_left"}[a]
        for a in cache._frame_actions(plain)
    ]
    assert cache.cue_action(mirrored).tolist() == [ACTIONS.index("turn_right")]
    assert cache.cue_action(plain).tolist() == [ACTIONS.index("turn_left")]
    # mirrored clips of one-sided actions can be left out (the originals stay)
    kept = CachedDataset(tmp_path / "cache", frames=4, mirror_skip_actions=["turn_right"])
    names = {(e["clip"], bool(e.get("mirror"))) for e in kept.entries}
    assert ("clips/000000", False) in names and ("clips/000000", True) not in names
    assert len(kept) == len(cache) - 1 - sum(
        bool(e.get("mirror")) and "turn_right" in cache.actions(i) and e["clip"] != "clips/000000"
        for i, e in enumerate(cache.entries)
    )
    recipe = apply_overrides(get_recipe("test-speak"), [
        "data=cache", f"data_path={tmp_path / 'cache'}", "latent_shape=[4,8,8]",
        "mirror_skip_actions=turn_right",
    ])  # fmt: skip
    assert len(build_dataset_for(recipe)) == len(kept)
    with pytest.raises(ValueError, match="not Stage actions"):
        apply_overrides(recipe, ["mirror_skip_actions=wiggle"])


def test_bad_clips_are_reported_and_skipped_or_fatal(stage_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(stage_data / "data", data)
    (data / "clips" / "000000" / "video.mp4").write_bytes(b"not a video at all")
    (data / "clips" / "000001" / "listen.wav").unlink()
    enc = encoder(stage_data / "bundle")
    report = encode_dataset(EncodeConfig(data=data, out=tmp_path / "cache"), enc)
    assert report.encoded == 1
    reasons = dict(report.skipped)
    assert any("video.mp4" in r for r in reasons.values())
    assert any("listen.wav" in r for r in reasons.values())
    errors = [json.loads(x) for x in (tmp_path / "cache" / "errors.jsonl").read_text().splitlines()]
    assert len(errors) == 2
    with pytest.raises(ClipError, match="video.mp4"):
        encode_dataset(EncodeConfig(data=data, out=tmp_path / "cache2", on_error="fail"), enc)
    # a cache is never silently reused with different settings
    other = tmp_path / "other"
    shutil.copytree(data, other)
    with pytest.raises(ValueError, match="other settings"):
        encode_dataset(EncodeConfig(data=other, out=tmp_path / "cache"), enc)


def test_encode_cli(stage_data, tmp_path):
    one = tmp_path / "one"
    build_dataset(
        StageDatasetConfig(out=one, clips=1, seconds=0.5, resolution=32, seed=6, backend="formant"),
        progress=False,
    )
    result = CliRunner().invoke(app, [
        "data", "encode", "--data", str(one), "--out", str(tmp_path / "c"),
        "--model", str(stage_data / "bundle"), "--no-progress",
    ])  # fmt: skip
    assert result.exit_code == 0, result.output
    assert "encoded 1 clips (0 already cached)" in result.output
    missing = CliRunner().invoke(app, ["data", "encode", "--data", str(tmp_path / "none"),
                                       "--out", str(tmp_path / "c2"), "--model",
                                       str(stage_data / "bundle")])  # fmt: skip
    assert missing.exit_code == 2 and "manifest.jsonl" in missing.output
    assert "encode" not in missing.output.split("error:")[0], "no progress bar before the error"
    (tmp_path / "afile").write_text("keep")
    onto_file = CliRunner().invoke(app, ["data", "encode", "--data", str(one), "--out",
                                         str(tmp_path / "afile"), "--model",
                                         str(stage_data / "bundle")])  # fmt: skip
    assert onto_file.exit_code == 2 and "is a file" in onto_file.output
    assert (tmp_path / "afile").read_text() == "keep"


@pytest.mark.gpu
def test_encoding_on_a_gpu_matches_the_cpu(stage_data, tmp_path):
    """`lpm data encode --device cuda` (clips read ahead on a thread) writes the CPU's cache
    within the GPU's convolution precision."""
    caches = {}
    for device in ("cpu", "cuda"):
        caches[device] = tmp_path / device
        result = CliRunner().invoke(app, [
            "data", "encode", "--data", str(stage_data / "data"), "--out", str(caches[device]),
            "--model", str(stage_data / "bundle"), "--no-progress", "--device", device,
        ])  # fmt: skip
        assert result.exit_code == 0, result.output
    ours, theirs = _cache_contents(caches["cuda"]), _cache_contents(caches["cpu"])
    _assert_same_cache(ours, theirs, rtol=1e-2, atol=1e-2)


def _cache_contents(cache_dir) -> list[tuple[dict, dict[str, torch.Tensor]]]:
    """(index entry without its shard name, tensors) of every clip, in index order."""
    from safetensors.torch import load_file

    entries = [json.loads(x) for x in (cache_dir / "index.jsonl").read_text().splitlines()]
    out = []
    for e in entries:
        shard = load_file(str(cache_dir / "shards" / e["shard"]))
        tensors = {k.split(".", 1)[1]: v for k, v in shard.items() if k.startswith(e["key"] + ".")}
        out.append(({k: v for k, v in e.items() if k != "shard"}, tensors))
    return out


def _assert_same_cache(ours, theirs, rtol: float = 0.0, atol: float = 1e-6) -> None:
    assert [e for e, _ in ours] == [e for e, _ in theirs]
    for (entry, a), (_, b) in zip(ours, theirs, strict=True):
        assert a.keys() == b.keys(), entry["clip"]
        for name in a:
            torch.testing.assert_close(a[name], b[name], rtol=rtol, atol=atol, msg=name)


def test_ranks_share_out_the_clips_and_a_killed_rank_is_merged_on_resume(stage_data, tmp_path):
    """Rank 1 of 2 finishes, rank 0 dies: the next run merges rank 1's part index and encodes
    the rest; the cache holds what one process writes. Features come back on the CPU."""
    enc = encoder(stage_data / "bundle")
    assert enc.device == torch.device("cpu")
    one = tmp_path / "one"
    encode_dataset(EncodeConfig(data=stage_data / "data", out=one, shard_clips=2), enc)
    cache = tmp_path / "two"
    # No process group: rank 1's collectives are no-ops, so this is rank 1 alone.
    report = encode_dataset(
        EncodeConfig(data=stage_data / "data", out=cache, shard_clips=2), enc,
        rank=1, world_size=2,
    )  # fmt: skip
    assert report.encoded == 1  # clips 0 and 2 are rank 0's
    assert [p.name for p in (cache / "shards").iterdir()] == ["shard-r001-00000.safetensors"]
    assert (cache / "index.part-001.jsonl").is_file() and not (cache / "index.jsonl").exists()
    again = encode_dataset(EncodeConfig(data=stage_data / "data", out=cache, shard_clips=2), enc)
    assert again.already_done == 1 and again.encoded == 2
    assert not list(cache.glob("index.part-*"))
    ours, theirs = _cache_contents(cache), _cache_contents(one)
    key = lambda item: item[0]["clip"]
    _assert_same_cache(sorted(ours, key=key), sorted(theirs, key=key))
    assert len(CachedDataset(cache, frames=4)) == 3
    with pytest.raises(ValueError, match="rank=2"):
        encode_dataset(EncodeConfig(data=stage_data / "data", out=cache), enc, rank=2, world_size=2)


def test_a_fatal_clip_keeps_the_clips_encoded_before_it(stage_data, tmp_path):
    import shutil

    data = tmp_path / "data"
    shutil.copytree(stage_data / "data", data)
    (data / "clips" / "000002" / "video.mp4").write_bytes(b"")
    enc = encoder(stage_data / "bundle")
    cfg = EncodeConfig(data=data, out=tmp_path / "cache", on_error="fail")
    with pytest.raises(ClipError, match="000002"):
        encode_dataset(cfg, enc)
    kept = [
        json.loads(x)["clip"] for x in (tmp_path / "cache" / "index.jsonl").read_text().splitlines()
    ]
    assert kept == ["clips/000000", "clips/000001"]
    errors = (tmp_path / "cache" / "errors.jsonl").read_text()
    assert "000002" in errors


@pytest.mark.multiproc
def test_encode_under_torchrun_writes_what_one_process_writes(stage_data, tmp_path):
    """`lpm data encode` on 2 gloo ranks: the same index, in the same order, and the same
    features as one process; only the shard names differ."""
    import shutil
    import subprocess

    from tests.train.conftest import cli_env, run_cli

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    one, two = tmp_path / "one", tmp_path / "two"
    enc = encoder(stage_data / "bundle")
    encode_dataset(EncodeConfig(data=stage_data / "data", out=one, shard_clips=1), enc)
    proc = run_cli([torchrun, "--standalone", "--nproc_per_node=2", "-m", "lpm.cli.main", "data",
                    "encode", "--data", str(stage_data / "data"), "--out", str(two),
                    "--model", str(stage_data / "bundle"), "--shard-clips", "1", "--no-progress"],
                   timeout=240)  # fmt: skip
    assert proc.stdout.count("encoded 3 clips (0 already cached), skipped 0") == 1  # rank 0 only
    shards = sorted(p.name for p in (two / "shards").iterdir())
    assert shards == ["shard-r000-00000.safetensors", "shard-r000-00001.safetensors",
                      "shard-r001-00000.safetensors"]  # fmt: skip
    _assert_same_cache(_cache_contents(two), _cache_contents(one))
    assert not list(two.glob("*.part-*"))
    # --on-error fail: the bad clip (rank 1's) stops the run on every rank, named in the error
    data = tmp_path / "data"
    shutil.copytree(stage_data / "data", data)
    (data / "clips" / "000001" / "speak.wav").write_bytes(b"RIFF")
    bad = tmp_path / "bad"
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "lpm.cli.main", "data",
           "encode", "--data", str(data), "--out", str(bad), "--model", str(stage_data / "bundle"),
           "--shard-clips", "1", "--on-error", "fail", "--no-progress"]  # fmt: skip
    proc = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=240)
    assert proc.returncode != 0 and "000001/speak.wav" in proc.stderr, proc.stderr[-3000:]
    index = bad / "index.jsonl"
    kept = (
        {json.loads(x)["clip"] for x in index.read_text().splitlines()} if index.exists() else set()
    )
    assert kept <= {"clips/000000", "clips/000002"}  # what rank 0 finished before it stopped
    assert "000001" in (tmp_path / "bad" / "errors.jsonl").read_text()


def test_reading_ahead_changes_nothing(stage_data, tmp_path):
    """Clips read ahead on a thread: the same cache, the same bad clips reported, in order."""
    import shutil

    data = tmp_path / "data"
    shutil.copytree(stage_data / "data", data)
    (data / "clips" / "000001" / "listen.wav").write_bytes(b"RIFF....WAVE")
    enc = encoder(stage_data / "bundle")
    reports = {}
    for ahead in (0, 1, 4):
        cfg = EncodeConfig(data=data, out=tmp_path / f"c{ahead}", shard_clips=1, prefetch=ahead,
                           mirror=True)  # fmt: skip
        reports[ahead] = encode_dataset(cfg, enc)
    assert reports[0].encoded == 4 and len(reports[0].skipped) == 2
    for ahead in (1, 4):
        assert reports[ahead].skipped == reports[0].skipped
        _assert_same_cache(
            _cache_contents(tmp_path / f"c{ahead}"), _cache_contents(tmp_path / "c0")
        )
    # a fatal clip stops the reading ahead; the clip before it is kept
    cfg = EncodeConfig(data=data, out=tmp_path / "fatal", on_error="fail", prefetch=4)
    with pytest.raises(ClipError, match="listen.wav"):
        encode_dataset(cfg, enc)
    assert len(CachedDataset(tmp_path / "fatal", frames=4)) == 1
    with pytest.raises(ValueError, match="prefetch"):
        EncodeConfig(data=data, out=tmp_path / "x", prefetch=-1)
