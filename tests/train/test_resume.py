"""Kill `lpm train` with SIGKILL after a checkpoint, resume it, and get the same run."""

from __future__ import annotations

import json
import signal
import subprocess
import time

import pytest
import torch
from conftest import CLI, cli_env, curve, final_weights, read_metrics, run_cli, train_args

from lpm.train.checkpoint import list_checkpoints


def test_kill_and_resume_matches_uninterrupted_run(reference_run, tmp_path):
    out = tmp_path / "run"
    proc = subprocess.Popen(CLI + train_args(out), env=cli_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)  # fmt: skip
    deadline = time.monotonic() + 120
    try:
        while not list_checkpoints(out):
            if proc.poll() is not None:
                pytest.fail(f"training exited ({proc.returncode}) before its first checkpoint:\n"
                            f"{proc.stdout.read()}")  # fmt: skip
            if time.monotonic() > deadline:
                pytest.fail("no checkpoint appeared within 120 s")
            time.sleep(0.005)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL, "training finished before it could be killed"
    total = len(read_metrics(reference_run))
    killed_at = [int(p.name.split("-")[1]) for p in list_checkpoints(out)][-1]
    assert killed_at < total, "the killed run already had its final checkpoint"

    run_cli(CLI + train_args(out, resume=True))
    assert json.loads((out / "run.json").read_text())["resumed_from"] == f"step-{killed_at:08d}"
    assert curve(out) == curve(reference_run)  # exact, step by step, every stage
    for sub in ("model.safetensors", "ema/model.safetensors", "optimizer.safetensors"):
        a, b = final_weights(out, sub), final_weights(reference_run, sub)
        assert a.keys() == b.keys()
        assert all(torch.equal(a[k], b[k]) for k in a), sub
