"""Helpers for training tests: run `lpm train` in a subprocess and read its run directory."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

#: Recipe and overrides shared by the subprocess tests (deterministic, every curriculum stage).
RECIPE = "test-tiny"
BASE_SET = ["deterministic=true"]
CLI = [sys.executable, "-m", "lpm.cli.main", "train"]


def cli_env() -> dict[str, str]:
    env = dict(os.environ)
    env.update(
        OMP_NUM_THREADS="1", GLOO_SOCKET_IFNAME="lo", HF_HUB_OFFLINE="1", PYTHONUNBUFFERED="1"
    )
    return env


def train_args(out: Path, *extra: str, resume: bool = False) -> list[str]:
    args = ["--recipe", RECIPE, "--out", str(out), "--no-progress"]
    for item in (*BASE_SET, *extra):
        args += ["--set", item]
    return args + (["--resume"] if resume else [])


def run_cli(cmd: list[str], timeout: float = 120) -> subprocess.CompletedProcess:
    """Run a command to completion; fail the test with its output if it does not succeed."""
    try:
        proc = subprocess.run(cmd, env=cli_env(), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as err:
        pytest.fail(f"{' '.join(cmd)} timed out after {timeout} s\n{err.stdout}\n{err.stderr}")
    if proc.returncode != 0:
        pytest.fail(
            f"{' '.join(cmd)} exited {proc.returncode}\n"
            f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
        )
    return proc


def read_metrics(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]


def curve(run_dir: Path, keys=("step", "stage", "loss", "grad_norm", "lr")) -> list[tuple]:
    return [tuple(r[k] for k in keys) for r in read_metrics(run_dir)]


def final_weights(run_dir: Path, sub: str = "model.safetensors") -> dict[str, torch.Tensor]:
    ckpts = sorted((run_dir / "checkpoints").glob("step-*"))
    return load_file(str(ckpts[-1] / sub))


@pytest.fixture(scope="session")
def reference_run(tmp_path_factory) -> Path:
    """An uninterrupted single-process run of the shared recipe."""
    out = tmp_path_factory.mktemp("reference") / "run"
    run_cli(CLI + train_args(out))
    return out
