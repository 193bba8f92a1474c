"""`benchmarks/train_speed.py`: its table and JSON line, in one process and under torchrun."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import pytest

from tests.train.conftest import run_cli

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "train_speed.py"
ARGS = ["--batch-sizes", "2", "--steps", "1", "--warmup", "1", "--stages", "listen", "long",
        "--set", "micro_batch_size=1"]  # fmt: skip


def _rows(stdout: str) -> list[dict]:
    result = json.loads(stdout.strip().splitlines()[-1])
    assert result["device"] and result["torch"]
    return result["rows"]


def test_one_process_prints_a_row_per_stage_and_batch():
    proc = run_cli([sys.executable, str(SCRIPT), *ARGS], timeout=300)
    rows = _rows(proc.stdout)
    assert [(r["stage"], r["batch_size"], r["micro_batch_size"]) for r in rows] == [
        ("listen", 2, 1),
        ("long", 2, 1),
    ]
    for r in rows:
        assert r["steps_per_s"] > 0 and r["samples_per_s"] == pytest.approx(2 * r["steps_per_s"])
        assert r["latents"] == [16, 12, 8, 8] and r["model"] == "lpm-nano"
    assert "listen" in proc.stdout and "samples/s" in proc.stdout


@pytest.mark.multiproc
def test_under_torchrun_rank0_prints_one_table():
    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    proc = run_cli([torchrun, "--standalone", "--nproc_per_node=2", str(SCRIPT), *ARGS],
                   timeout=300)  # fmt: skip
    assert proc.stdout.count("samples/s") == 1
    rows = _rows(proc.stdout)
    assert json.loads(proc.stdout.strip().splitlines()[-1])["device"].startswith("2 x ")
    assert len(rows) == 2 and all(r["steps_per_s"] > 0 for r in rows)
