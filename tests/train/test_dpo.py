"""DPO post-training: Pareto pairs, the Diffusion-DPO loss, candidates, the trainer and the CLI.

The end-to-end tests make candidates with a tiny random bundle (2 conditions x 3 candidates,
randomly initialised Stage probes: plumbing, the scores mean nothing) and post-train on them.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import math
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from lpm.bench.materialize import load_inputs
from lpm.bench.runner import case_script
from lpm.bench.suites import load_suite
from lpm.data.stage.schema import TRAIN_SEEDS
from lpm.inference import Pipeline
from lpm.parallel import DistInfo
from lpm.train.dpo import (
    DIMENSIONS,
    CandidateSet,
    CandidateSettings,
    DPORecipe,
    NoParetoPairsError,
    apply_overrides,
    candidate_scores,
    diffusion_dpo_loss,
    generate_candidates,
    get_recipe,
    pareto_pairs,
    preferred,
)
from lpm.train.dpo.problem import pair_errors, pair_inputs
from lpm.train.dpo.trainer import DPOTrainer, select_run_pairs

TESTS = Path(__file__).resolve().parents[1]
CPU = DistInfo(device=torch.device("cpu"))
LOG2 = math.log(2.0)


def _bench_helpers():
    spec = importlib.util.spec_from_file_location(
        "_dpo_bench_conftest", TESTS / "bench" / "conftest.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


# ---- Pareto selection ---------------------------------------------------------------------------
def test_preferred_needs_a_lead_and_no_loss_beyond_the_tolerance():
    dims = ("a", "b")
    kw = dict(tie_tolerance=0.01, margin=0.05)
    assert preferred({"a": 0.5, "b": 0.5}, {"a": 0.4, "b": 0.5}, dims, **kw)
    assert not preferred({"a": 0.4, "b": 0.5}, {"a": 0.5, "b": 0.5}, dims, **kw)
    # worse on b by 0.005 (within the tolerance) vs by 0.02 (beyond it)
    assert preferred({"a": 0.6, "b": 0.495}, {"a": 0.4, "b": 0.5}, dims, **kw)
    assert not preferred({"a": 0.6, "b": 0.48}, {"a": 0.4, "b": 0.5}, dims, **kw)
    # a lead of 0.03 is not more than the margin; equal scores prefer neither
    assert not preferred({"a": 0.43, "b": 0.5}, {"a": 0.4, "b": 0.5}, dims, **kw)
    assert not preferred({"a": 0.4, "b": 0.5}, {"a": 0.4, "b": 0.5}, dims, **kw)
    # dimensions a candidate has no score for are left out; none in common: no preference
    assert preferred({"a": 0.9, "b": None}, {"a": 0.4, "b": 0.9}, dims, **kw)
    assert not preferred({"a": None, "b": 0.9}, {"a": 0.4, "b": None}, dims, **kw)
    # only the named dimensions count
    assert not preferred({"a": 0.9, "b": 0.1}, {"a": 0.4, "b": 0.5}, dims, **kw)
    assert preferred({"a": 0.9, "b": 0.1}, {"a": 0.4, "b": 0.5}, ("a",), **kw)


def test_pareto_pairs_are_antisymmetric_and_capped_by_lead():
    g = torch.Generator().manual_seed(0)
    scores = [dict(zip("xyz", torch.rand(3, generator=g).tolist(), strict=True)) for _ in range(8)]
    pairs = pareto_pairs(scores, "xyz", tie_tolerance=0.02, margin=0.05)
    assert pairs and all((j, i) not in pairs for i, j in pairs)
    for i, j in pairs:
        assert all(scores[i][d] >= scores[j][d] - 0.02 for d in "xyz")
    expected = {
        (i, j)
        for i in range(8)
        for j in range(8)
        if all(scores[i][d] >= scores[j][d] - 0.02 for d in "xyz")
        and any(scores[i][d] > scores[j][d] + 0.05 for d in "xyz")
    }
    assert set(pairs) == expected
    lead = lambda p: sum(scores[p[0]][d] - scores[p[1]][d] for d in "xyz")  # noqa: E731
    top = pareto_pairs(scores, "xyz", tie_tolerance=0.02, margin=0.05, max_pairs=2)
    assert len(top) == 2 and sorted(map(lead, top)) == sorted(map(lead, pairs))[-2:]


def test_candidate_scores_are_oriented_higher_is_better():
    s = candidate_scores(
        {"truth_mouth_corr": 0.4, "sync_corr": 0.1, "listen_mouth": 0.2, "id_similarity": 0.9,
         "text_accuracy": 0.5, "false_lip_rate": 0.7},
        {"motion": 0.6, "sync": 0.3},
    )  # fmt: skip
    assert s == pytest.approx(
        {"lip_sync": 0.4, "stillness": 0.8, "identity": 0.9, "text": 0.5, "motion": 0.6,
         "sync": 0.3}
    )  # fmt: skip
    # real cases (no Stage labels): the speech envelope and the false lip rate stand in
    fallback = candidate_scores({"sync_corr": 0.1, "false_lip_rate": 0.25}, {})
    assert fallback["lip_sync"] == pytest.approx(0.1) and fallback["stillness"] == 0.75
    assert set(fallback) == set(DIMENSIONS) and fallback["identity"] is None


# ---- the loss -----------------------------------------------------------------------------------
def test_dpo_loss_is_log2_when_the_policy_is_the_reference():
    e = torch.rand(2, 5, generator=torch.Generator().manual_seed(1))
    terms = diffusion_dpo_loss(e[0], e[1], e[0].clone(), e[1].clone(), beta=500.0, fm_weight=0.0)
    assert torch.equal(terms.dpo, torch.full((5,), LOG2))
    assert torch.equal(terms.logit, torch.zeros(5)) and terms.reward_accuracy == 0
    with_reg = diffusion_dpo_loss(e[0], e[1], e[0], e[1], beta=500.0, fm_weight=0.5)
    assert with_reg.loss.item() == pytest.approx(LOG2 + 0.5 * e[0].mean().item())


def test_dpo_loss_rewards_a_better_winner_and_a_worse_loser():
    ref_w, ref_l = torch.tensor([0.20, 0.20]), torch.tensor([0.30, 0.30])
    err_w = torch.tensor([0.18, 0.22], requires_grad=True)  # pair 0: winner predicted better
    err_l = torch.tensor([0.30, 0.30], requires_grad=True)
    terms = diffusion_dpo_loss(err_w, err_l, ref_w, ref_l, beta=100.0, fm_weight=0.0)
    assert terms.logit.tolist() == pytest.approx([1.0, -1.0])  # -100/2 * (-0.02), * (+0.02)
    assert terms.dpo[0] < LOG2 < terms.dpo[1] and terms.reward_accuracy == 0.5
    terms.loss.backward()
    # descent lowers the winner's error and raises the loser's
    assert (err_w.grad > 0).all() and (err_l.grad < 0).all()
    with pytest.raises(ValueError, match="beta"):
        diffusion_dpo_loss(err_w, err_l, ref_w, ref_l, beta=0.0, fm_weight=0.0)


# ---- recipes ------------------------------------------------------------------------------------
def test_recipe_validation_names_the_field_and_overrides_are_typed():
    with pytest.raises(ValueError, match="margin"):
        DPORecipe(name="x", tie_tolerance=0.1, margin=0.05)
    with pytest.raises(ValueError, match="dimensions has unknown"):
        DPORecipe(name="x", dimensions=("lip_sync", "charm"))
    with pytest.raises(ValueError, match="beta"):
        DPORecipe(name="x", beta=-1.0)
    r = apply_overrides(get_recipe("nano-dpo"), ["dimensions=identity,text", "beta=250"])
    assert r.dimensions == ("identity", "text") and r.beta == 250.0
    with pytest.raises(ValueError, match="--set lr"):
        apply_overrides(r, ["lr=fast"])
    with pytest.raises(ValueError, match="unknown DPORecipe field"):
        apply_overrides(r, ["model.dim=8"])


def test_stage_dpo_suite_uses_training_identities_only():
    suite = load_suite("stage-dpo")
    assert len(suite.cases) == 96 and {c.duration_s for c in suite.cases} == {2.0}
    assert all(c.stage.performer_seed in TRAIN_SEEDS for c in suite.cases)
    assert all(c.stage.partner_seed in TRAIN_SEEDS for c in suite.cases)
    assert [c.subset for c in suite.cases[:4]] == [
        "speaking", "listening", "conversation", "diverse-motion"
    ]  # fmt: skip


# ---- candidates ---------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def tiny_bundle_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("dpo-bundle") / "tiny-model"
    _bench_helpers().load_tiny_bundle().save(out)
    return out


@pytest.fixture(scope="module")
def candidates_dir(tmp_path_factory, tiny_bundle_dir) -> Path:
    from lpm.bench.backends import StageBackend

    out = tmp_path_factory.mktemp("dpo-candidates")
    settings = CandidateSettings(model=str(tiny_bundle_dir), limit=2, candidates=3, progress=False)
    summary = generate_candidates(
        settings, out, backend=StageBackend(_bench_helpers().random_probes())
    )
    assert (summary.conditions, summary.new, summary.candidates) == (2, 2, 6)
    return out


def test_candidates_store_the_sampled_latents_conditions_and_scores(
    candidates_dir, tiny_bundle_dir
):
    found = CandidateSet(candidates_dir)
    assert [r.id for r in found.records] == ["dpo-listening-0001", "dpo-speaking-0000"]
    record = found.records[1]
    assert record.seeds == [0, 1, 2] and record.reference_kinds == (("first_frame", 0),
                                                                    ("global", 0))  # fmt: skip
    assert all(set(s) == set(DIMENSIONS) for s in record.scores)
    assert record.scores[0]["identity"] is not None
    x0 = found.tensor(1, "x0")
    assert x0.shape == (3, 16, 8, 4, 4) and not torch.equal(x0[0], x0[1])
    # the stored x0 is exactly what the offline pipeline makes for the case with that seed
    inputs = load_inputs(candidates_dir / "cases" / record.id / "inputs")
    video = Pipeline.from_pretrained(tiny_bundle_dir).generate(
        inputs.first_frame, speak_audio=inputs.speak, listen_audio=inputs.listen,
        script=case_script(inputs.case), seconds=inputs.case.duration_s, seed=2,
    )  # fmt: skip
    assert torch.equal(video.latents[0], x0[2])
    tensors = load_file(str(candidates_dir / "conditions" / f"{record.id}.safetensors"))
    assert (
        tensors["references"].shape[:3] == (1, 16, 2) and tensors["text_mask"].dtype == torch.bool
    )


def test_candidates_resume_and_refuse_other_settings(candidates_dir, tiny_bundle_dir):
    settings = CandidateSettings(model=str(tiny_bundle_dir), limit=2, candidates=3, progress=False)
    again = generate_candidates(settings, candidates_dir, backend=object())  # nothing to score
    assert (again.conditions, again.new) == (2, 0)
    with pytest.raises(ValueError, match="another --out"):
        generate_candidates(dataclasses.replace(settings, candidates=4), candidates_dir)
    with pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"):
        dataclasses.replace(settings, device="tpu")


def test_cue_model_candidates_replay_their_timed_cues(tmp_path, candidates_dir):
    from lpm.bench.backends import StageBackend

    bundle = _bench_helpers().load_tiny_bundle(text_cues=True)
    bundle.save(tmp_path / "cue-model")
    settings = CandidateSettings(model=str(tmp_path / "cue-model"), limit=1, candidates=2,
                                 progress=False)  # fmt: skip
    generate_candidates(
        settings, tmp_path / "cands", backend=StageBackend(_bench_helpers().random_probes())
    )
    found = CandidateSet(tmp_path / "cands")
    assert found.records[0].id == "dpo-speaking-0000"  # "The character nods." from 0 s
    index = found.tensor(0, "cue_index")
    feats, mask = found.tensor(0, "cue_features"), found.tensor(0, "cue_mask")
    assert index.shape == (found.tensor(0, "x0").shape[2],) and int(index[0]) >= 0
    assert feats.shape[:2] == mask.shape and feats.shape[0] > int(index.max())
    # the DPO step sees each frame's cue, as the sampler did
    trainer = DPOTrainer(
        _recipe(tmp_path / "cands", fm_weight=0.0, steps=1, batch_size=1), tmp_path / "run",
        dist_info=CPU, progress=False,
    )  # fmt: skip
    batch = trainer.pairs.batch([0], trainer.device)
    assert torch.equal(batch.cues.index[0], index) and torch.equal(batch.cues.features[0], feats)
    kwargs = pair_inputs(batch, trainer.recipe, 0, trainer.device).model_kwargs
    assert torch.equal(kwargs["cues"].index, torch.stack([index, index]))
    assert math.isfinite(trainer.train_step()["loss"])
    # the candidates of a model without cues store none, and their batches carry none
    assert not CandidateSet(candidates_dir).has(0, "cue_index")


def test_no_pareto_pairs_says_how_to_get_more(candidates_dir):
    recipe = dataclasses.replace(
        get_recipe("test-tiny-dpo"), candidates=str(candidates_dir), margin=10.0
    )
    with pytest.raises(NoParetoPairsError, match="more candidates per condition"):
        select_run_pairs(CandidateSet(candidates_dir), recipe)


# ---- training -----------------------------------------------------------------------------------
def _recipe(candidates_dir: Path, **changes) -> DPORecipe:
    # random probes score motion for every candidate (and differently); margin 0 keeps every
    # strict difference, so 2 conditions x 3 candidates give 3 pairs each
    return dataclasses.replace(
        get_recipe("test-tiny-dpo"), candidates=str(candidates_dir), dimensions=("motion",),
        tie_tolerance=0.0, margin=0.0, **changes,
    )  # fmt: skip


def _errors(trainer: DPOTrainer, inputs) -> tuple[torch.Tensor, torch.Tensor]:
    with torch.no_grad():
        return pair_errors(trainer.model, inputs)


def test_one_step_lowers_the_winner_error_relative_to_the_loser(candidates_dir, tmp_path):
    trainer = DPOTrainer(
        _recipe(candidates_dir, fm_weight=0.0, steps=1), tmp_path / "run", dist_info=CPU,
        progress=False,
    )  # fmt: skip
    assert len(trainer.pairs) == 6
    reference = {k: v.clone() for k, v in trainer.reference.state_dict().items()}
    # the step's batch and draws, replayed: they depend only on (seed, step, pair index)
    sampler_state = trainer.sampler.state_dict()
    batch = trainer.pairs.batch(trainer.sampler.next_indices(0), trainer.device)
    trainer.sampler.load_state_dict(sampler_state)
    inputs = pair_inputs(batch, trainer.recipe, 0, trainer.device)
    b, noise, timestep = len(batch.indices), inputs.noise, inputs.timestep
    assert torch.equal(noise[:b], noise[b:]) and torch.equal(timestep[:b], timestep[b:])
    assert torch.equal(inputs.x0[:b], batch.x0_w) and not torch.equal(inputs.x0[b:], batch.x0_w)
    e_w, e_l = _errors(trainer, inputs)
    record = trainer.train_step()
    assert record["dpo_loss"] == pytest.approx(LOG2, abs=1e-6)  # policy == reference
    after_w, after_l = _errors(trainer, inputs)
    assert ((after_w - after_l) < (e_w - e_l)).all()
    # the reference is frozen: no gradient, unchanged weights
    assert all(p.grad is None and not p.requires_grad for p in trainer.reference.parameters())
    assert all(torch.equal(v, reference[k]) for k, v in trainer.reference.state_dict().items())
    assert any(not torch.equal(p, reference[n]) for n, p in trainer.model.named_parameters())


def _curve(run_dir: Path) -> list[tuple]:
    keys = ("step", "loss", "dpo_loss", "fm_loss", "reward_accuracy", "grad_norm", "lr")
    lines = (run_dir / "metrics.jsonl").read_text().splitlines()
    return [tuple(json.loads(line)[k] for k in keys) for line in lines]


@pytest.mark.gpu
def test_dpo_trains_on_a_gpu_and_follows_the_cpu(candidates_dir, tmp_path):
    """The policy, its frozen reference and the pair inputs on CUDA (bf16 autocast): finite
    losses near the CPU run's on the first step, where both start from the same weights."""
    recipe = _recipe(candidates_dir, steps=2)
    cpu = DPOTrainer(recipe, tmp_path / "cpu", dist_info=CPU, progress=False)
    cpu.fit()
    gpu_info = DistInfo(device=torch.device("cuda", 0))
    gpu = DPOTrainer(recipe, tmp_path / "gpu", dist_info=gpu_info, progress=False)
    gpu.fit()
    a, b = _curve(tmp_path / "cpu"), _curve(tmp_path / "gpu")
    assert [r[0] for r in b] == [1, 2] and all(math.isfinite(x) for r in b for x in r[1:4])
    assert b[0][1] == pytest.approx(a[0][1], rel=0.05), (a[0], b[0])


def test_interrupted_run_resumes_to_the_uninterrupted_result(candidates_dir, tmp_path):
    recipe = _recipe(candidates_dir)
    full = DPOTrainer(recipe, tmp_path / "full", dist_info=CPU, progress=False)
    result = full.fit()
    assert result.steps == 6 and (tmp_path / "full" / "dpo_loss.png").is_file()
    run = json.loads((tmp_path / "full" / "run.json").read_text())
    assert run["pairs"] == 6 and run["init"].endswith("tiny-model")
    first = json.loads((tmp_path / "full" / "metrics.jsonl").read_text().splitlines()[0])
    assert first["dpo_loss"] == pytest.approx(LOG2, abs=1e-6) and first["reward_accuracy"] == 0

    part = DPOTrainer(recipe, tmp_path / "part", dist_info=CPU, progress=False)
    for _ in range(2):  # two steps and a checkpoint, then the process "dies"
        part.metrics.append(part.train_step())
    part.save()
    del part
    resumed = DPOTrainer(recipe, tmp_path / "part", dist_info=CPU, resume=True, progress=False)
    assert resumed.step == 2
    resumed.fit()
    assert _curve(tmp_path / "part") == _curve(tmp_path / "full")
    for sub in ("model.safetensors", "ema/model.safetensors", "optimizer.safetensors"):
        a = load_file(str(tmp_path / "full" / "checkpoints" / "step-00000006" / sub))
        b = load_file(str(tmp_path / "part" / "checkpoints" / "step-00000006" / sub))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a), sub

    with pytest.raises(ValueError, match="differ"):  # other selection settings: refused
        DPOTrainer(_recipe(candidates_dir, max_pairs_per_condition=1), tmp_path / "part",
                   dist_info=CPU, resume=True, progress=False)  # fmt: skip


def test_pack_writes_a_bundle_with_the_post_trained_transformer(
    candidates_dir, tiny_bundle_dir, tmp_path
):
    from lpm.inference import ModelBundle
    from lpm.inference.pack import pack_finetuned

    DPOTrainer(_recipe(candidates_dir, steps=2, ema_decay=0.0), tmp_path / "run", dist_info=CPU,
               progress=False).fit()  # fmt: skip
    out = pack_finetuned(tiny_bundle_dir, checkpoint=tmp_path / "run", out=tmp_path / "b",
                         half=False)  # fmt: skip
    packed = ModelBundle.load(out)
    trained = load_file(str(tmp_path / "run" / "checkpoints" / "step-00000002" /
                            "model.safetensors"))  # fmt: skip
    assert packed.spec.name == "tiny-dpo"
    assert all(torch.equal(v, trained[k]) for k, v in packed.transformer.state_dict().items())


def test_evaluation_is_neutral_for_the_reference_and_not_after_training(candidates_dir, tmp_path):
    from lpm.train.dpo.evaluate import evaluate_pairs, evaluate_run

    trainer = DPOTrainer(
        _recipe(candidates_dir, steps=3), tmp_path / "run", dist_info=CPU, progress=False
    )
    same = evaluate_pairs(trainer.reference, trainer.reference, trainer.pairs, trainer.recipe,
                          draws=2)  # fmt: skip
    assert (same.pairs, same.draws, same.reward_accuracy) == (6, 2, 0.0)
    assert same.dpo_loss == pytest.approx(LOG2, abs=1e-7) and same.winner_vs_ref == 0
    trainer.fit()
    moved = evaluate_run(tmp_path / "run", candidates_dir, draws=2)
    assert moved.pairs == 6 and moved.winner_vs_ref != 0 and moved.dpo_loss != pytest.approx(LOG2)


# ---- command line -------------------------------------------------------------------------------
def _cli(*args: str) -> tuple[int, str]:
    """Exit code and output (box drawing removed, whitespace joined) of ``lpm dpo ARGS``."""
    from typer.testing import CliRunner

    from lpm.cli.main import app

    res = CliRunner().invoke(app, ["dpo", *args])
    text = "".join(" " if c in "│╭╮╰╯─" else c for c in res.output + str(res.exception or ""))
    return res.exit_code, " ".join(text.split())


def test_cli_train_and_resume_and_clear_errors(candidates_dir, tmp_path):
    code, out = _cli("train", "--candidates", str(tmp_path / "nope"), "--out", str(tmp_path / "r"))
    assert code == 2 and "does not exist" in out and "lpm dpo candidates" in out
    code, out = _cli("candidates", "--out", str(tmp_path / "c"), "--start", "96")
    assert code == 2 and "none from 96" in out
    code, out = _cli("pairs", "--candidates", str(candidates_dir), "--set", "margin=10")
    assert code == 2 and "no Pareto-preferred pair" in out and "--candidates 8" in out
    sets = ["--set", "dimensions=motion", "--set", "tie_tolerance=0", "--set", "margin=0"]
    code, out = _cli(
        "pairs", "--candidates", str(candidates_dir), "--recipe", "test-tiny-dpo", *sets
    )
    assert code == 0 and json.loads(out)["pairs"] == 6, out
    run = ["train", "--recipe", "test-tiny-dpo", "--candidates", str(candidates_dir),
           "--out", str(tmp_path / "run"), "--no-progress", *sets]  # fmt: skip
    code, out = _cli(*run, "--set", "steps=2")
    assert code == 0, out
    code, out = _cli(*run, "--set", "steps=3")
    assert code == 2 and "--resume" in out
    code, out = _cli(*run, "--set", "steps=3", "--resume")
    assert code == 0, out
    run_json = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run_json["resumed_from"] == "step-00000002"
    steps = [json.loads(x)["step"] for x in (tmp_path / "run" / "metrics.jsonl").open()]
    assert steps == [1, 2, 3]


@pytest.mark.multiproc
def test_fsdp_two_ranks_match_one_process(candidates_dir, tmp_path):
    import shutil

    from conftest import run_cli

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    DPOTrainer(_recipe(candidates_dir), tmp_path / "one", dist_info=CPU, progress=False).fit()
    sets = ["dimensions=motion", "tie_tolerance=0", "margin=0"]
    cmd = [torchrun, "--standalone", "--nproc_per_node=2", "-m", "lpm.cli.main", "dpo", "train",
           "--recipe", "test-tiny-dpo", "--candidates", str(candidates_dir), "--out",
           str(tmp_path / "two"), "--no-progress"]  # fmt: skip
    run_cli(cmd + [a for s in sets for a in ("--set", s)], timeout=240)
    one, two = _curve(tmp_path / "one"), _curve(tmp_path / "two")
    assert [r[0] for r in one] == [r[0] for r in two] and [r[6] for r in one] == [r[6] for r in two]
    # step, loss, dpo_loss, fm_loss, reward accuracy. The losses drift by float rounding, fed
    # back through the weight differences below (measured: 1.0e-5 relative on the dpo loss at
    # step 5 on a 2-core CPU).
    for a, b in zip(one, two, strict=True):
        assert b[1:4] == pytest.approx(a[1:4], rel=1e-4, abs=1e-5) and b[4] == a[4], (a, b)
    # Weights: the gradient reduction order (per-rank sums, then reduce-scatter) leaves ~1e-7
    # differences, which AdamW turns into lr-sized ones only where a gradient is itself ~0: the
    # zero-initialised audio path's keys (measured: 4e-4 on blocks.0 audio_k, <= 1e-6 elsewhere).
    for sub in ("model.safetensors", "ema/model.safetensors"):
        w1 = load_file(str(tmp_path / "one" / "checkpoints" / "step-00000006" / sub))
        w2 = load_file(str(tmp_path / "two" / "checkpoints" / "step-00000006" / sub))
        assert w1.keys() == w2.keys()
        for k in w1:
            gap = (w1[k] - w2[k]).abs().max().item()
            assert gap <= (1e-3 if "audio_k" in k else 1e-5), f"{sub} {k}: {gap:.3g}"
