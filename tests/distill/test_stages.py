"""`lpm distill` end to end: the four stages chained, stage 1 learns, kill-and-resume is exact."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from typer.testing import CliRunner

from lpm.cli.main import app
from lpm.distill.models import load_teacher
from lpm.distill.trainer import DistillTrainer, build_dataset
from lpm.distill.trajectories import generate_trajectories
from lpm.models.dit.checkpoint import load_lpm_checkpoint, save_lpm_checkpoint
from lpm.models.dit.model import LPMTransformer
from lpm.parallel.distributed import DistInfo
from lpm.train.checkpoint import list_checkpoints
from tests.distill.conftest import tiny


def _metrics(run) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


def _distill(out, stage: int, *sets: str, device: str = "cpu"):
    args = ["distill", "--recipe", "test-tiny", "--stage", str(stage), "--out", str(out),
            "--no-progress", "--device", device]  # fmt: skip
    for item in sets:
        args += ["--set", item]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output + repr(result.exception)
    return _metrics(out)


def test_four_stages_chain_end_to_end(tmp_path, trajectories):
    traj = f"trajectories={trajectories}"
    runs = {s: tmp_path / f"stage{s}" for s in (1, 2, 3, 4)}
    records = {
        1: _distill(runs[1], 1, traj),
        2: _distill(runs[2], 2, traj, f"init={runs[1]}"),
        3: _distill(runs[3], 3, f"init={runs[2]}"),
        4: _distill(runs[4], 4, f"backbone={runs[3]}"),
    }
    for stage, recs in records.items():
        assert [r["step"] for r in recs] == [1, 2, 3, 4]
        assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in recs)
        if stage > 1:
            assert all(math.isfinite(r["critic_loss"]) and r["critic_loss"] > 0 for r in recs)
            assert all(math.isfinite(r["dmd"]) for r in recs)
        student = load_lpm_checkpoint(list_checkpoints(runs[stage])[-1])
        assert student.cfg.attention == "chunk_causal"
    assert all("perceptual" in r for r in records[2])
    assert {"ode_t1000", "ode_t750", "ode_t500"} <= records[1][0].keys()
    assert (runs[3] / "critic" / "checkpoints").is_dir()

    bad = CliRunner().invoke(app, ["distill", "--recipe", "test-tiny", "--stage", "1",
                                   "--out", str(tmp_path / "x")])  # fmt: skip
    assert bad.exit_code != 0 and "lpm distill" in bad.output and "trajectories" in bad.output


@pytest.mark.gpu
def test_four_stages_chain_on_a_gpu(tmp_path, trajectories):
    """The chain on CUDA: ODE regression, the off- and on-policy DMD stages with their critic,
    and the refiner's rollout through the streaming chunk step (history noise drawn on the CPU
    generator and moved to the GPU)."""
    traj = f"trajectories={trajectories}"
    runs = {s: tmp_path / f"stage{s}" for s in (1, 2, 3, 4)}
    sets = {1: [traj], 2: [traj, f"init={runs[1]}"], 3: [f"init={runs[2]}"],
            4: [f"backbone={runs[3]}"]}  # fmt: skip
    for stage, extra in sets.items():
        recs = _distill(runs[stage], stage, *extra, device="cuda")
        assert [r["step"] for r in recs] == [1, 2, 3, 4]
        assert all(math.isfinite(r["loss"]) and math.isfinite(r["grad_norm"]) for r in recs)
        run = json.loads((runs[stage] / "run.json").read_text())
        assert run["device"].startswith("cuda"), run["device"]


def test_stage1_learns_the_teachers_two_step_map(tmp_path):
    """A student from an unrelated init regresses a 2-step teacher's ODE map."""
    sets = ["teacher_steps=2", "dataset_size=4", "batch_size=4", "lr=3e-3", "ema_decay=0",
            "stage_steps=40,4,4,4", "checkpoint_every=0"]  # fmt: skip
    recipe = tiny(*sets)
    cpu = torch.device("cpu")
    teacher = load_teacher("", recipe.model_config(), seed=0, device=cpu)
    generate_trajectories(recipe, teacher, build_dataset(recipe), tmp_path / "traj")
    torch.manual_seed(123)
    save_lpm_checkpoint(LPMTransformer(recipe.student_config()), tmp_path / "init")
    recipe = tiny(*sets, f"trajectories={tmp_path / 'traj'}", f"init={tmp_path / 'init'}")
    dist = DistInfo(device=cpu)
    trainer = DistillTrainer(recipe, tmp_path / "run", dist_info=dist, progress=False)
    losses = [trainer.train_step()["loss"] for _ in range(40)]
    first, last = sum(losses[:3]) / 3, sum(losses[-3:]) / 3
    assert last < 0.2 * first, (first, last)


def test_kill_and_resume_gives_the_same_losses(tmp_path):
    sets = ["stage_steps=4,4,8,4", "checkpoint_every=2", "deterministic=true"]
    cmd = [sys.executable, "-m", "lpm.cli.main", "distill", "--recipe", "test-tiny", "--stage",
           "3", "--no-progress"]  # fmt: skip
    for item in sets:
        cmd += ["--set", item]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    ref, out = tmp_path / "ref", tmp_path / "run"
    subprocess.run([*cmd, "--out", str(ref)], env=env, check=True, capture_output=True)

    proc = subprocess.Popen([*cmd, "--out", str(out)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while not list_checkpoints(out):
            if proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail("the run ended or stalled before its first checkpoint")
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    killed_at = int(list_checkpoints(out)[-1].name.split("-")[1])
    assert killed_at < 8
    subprocess.run([*cmd, "--out", str(out), "--resume"], env=env, check=True,
                   capture_output=True)  # fmt: skip
    assert json.loads((out / "run.json").read_text())["resumed_from"] == f"step-{killed_at:08d}"
    keys = ("step", "loss", "grad_norm", "critic_loss", "dmd", "lr")
    curve = lambda run: [tuple(r[k] for k in keys) for r in _metrics(run)]  # noqa: E731
    assert curve(out) == curve(ref)


def test_students_take_the_architecture_of_a_teacher_checkpoint(tmp_path):
    """A teacher with ordered speak tokens (not in the recipe's config) gives students that
    have them too, initialised from its weights."""
    recipe = tiny()
    cfg = recipe.model_config().replace(speak_tokens_per_latent=2)
    torch.manual_seed(0)
    save_lpm_checkpoint(LPMTransformer(cfg), tmp_path / "teacher")
    # stage 3 (on-policy DMD) builds the student and the critic and needs no trajectories
    records = _distill(tmp_path / "s3", 3, f"teacher={tmp_path / 'teacher'}", "stage_steps=1,1,2,1")
    assert [r["step"] for r in records] == [1, 2]
    student = load_lpm_checkpoint(list_checkpoints(tmp_path / "s3")[-1])
    assert student.cfg.speak_tokens_per_latent == 2 and student.cfg.attention == "chunk_causal"
    # the recipe's cache layout still applies to the students
    assert (student.cfg.sink_chunks, student.cfg.window_chunks) == (
        recipe.model_config().sink_chunks,
        recipe.model_config().window_chunks,
    )
    assert (cfg.sink_chunks, cfg.window_chunks) != (0, 1)
    _distill(tmp_path / "w", 3, f"teacher={tmp_path / 'teacher'}", "stage_steps=1,1,1,1",
             "model.sink_chunks=0", "model.window_chunks=1")  # fmt: skip
    student = load_lpm_checkpoint(list_checkpoints(tmp_path / "w")[-1])
    assert (student.cfg.sink_chunks, student.cfg.window_chunks) == (0, 1)
