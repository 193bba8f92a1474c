"""`benchmarks/gpu_tables.sh`: valid bash, a clear refusal without a GPU, and only options the
benchmarks it calls accept."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "gpu_tables.sh"


def _runs() -> list[tuple[str, list[str]]]:
    """(benchmark file, its options) for every `run` line, continuation lines joined."""
    text = SCRIPT.read_text().replace("\\\n", " ")
    runs = []
    for line in text.splitlines():
        match = re.match(r"run \S+ \d+ .*?(benchmarks/\w+\.py)(.*)", line)
        if match:
            runs.append((match.group(1), re.findall(r"(--[\w-]+)", match.group(2))))
    return runs


def test_the_script_is_valid_bash():
    assert subprocess.run(["bash", "-n", str(SCRIPT)]).returncode == 0


def test_every_option_it_passes_is_one_its_benchmark_takes():
    runs = _runs()
    assert {path for path, _ in runs} == {
        "benchmarks/train_speed.py",
        "benchmarks/streaming_speed.py",
        "benchmarks/plot_streaming.py",
    }
    helps = {}
    for path, options in runs:
        if path not in helps:
            helps[path] = subprocess.run(
                [sys.executable, path, "--help"], cwd=ROOT, capture_output=True, text=True
            ).stdout
        for option in options:
            assert option in helps[path], f"{path} does not take {option}"


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the refusal on a machine without one")
def test_without_a_gpu_it_says_so_and_writes_nothing(tmp_path):
    res = subprocess.run(
        ["bash", str(SCRIPT), str(tmp_path / "tables")], capture_output=True, text=True
    )
    assert res.returncode == 2 and "needs a CUDA GPU" in res.stderr
    assert not (tmp_path / "tables").exists()


def test_an_output_path_that_is_a_file_is_refused_and_kept(tmp_path):
    target = tmp_path / "tables"
    target.write_text("keep")
    res = subprocess.run(["bash", str(SCRIPT), str(target)], capture_output=True, text=True)
    assert res.returncode == 2 and "is a file" in res.stderr
    assert target.read_text() == "keep"
