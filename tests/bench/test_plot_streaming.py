"""`benchmarks/plot_streaming.py`: a stage-by-stage plot of streaming_speed rows, and clear
refusals of inputs without rows and of outputs that are not a .png file."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "plot_streaming.py"


def _row(pipelined: bool, steady: float) -> dict:
    return {"config": "lpm-nano-online", "resolution": 64, "decoder": "light",
            "pipelined": pipelined, "steady_chunk_s": steady, "steady_rtf": 1.0 / steady,
            "stage_s": {"conditions": 0.01, "backbone": 0.05, "refiner": 0.03, "decode": 0.01},
            "weights": "random"}  # fmt: skip


def _run(*args) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(SCRIPT), *map(str, args)], capture_output=True,
                          text=True, cwd=ROOT)  # fmt: skip


def test_it_plots_every_row_of_every_saved_output(tmp_path):
    saved = tmp_path / "stream.txt"
    rows = [_row(False, 0.1), _row(True, 0.08)]
    saved.write_text("a table\n" + json.dumps({"benchmark": "streaming_speed", "rows": rows}))
    res = _run(saved, saved, "--out", tmp_path / "plots" / "s.png")
    assert res.returncode == 0, res.stderr
    assert json.loads(res.stdout.splitlines()[-1])["rows"] == 4
    png = (tmp_path / "plots" / "s.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert "lpm-nano-online (random) 64 light, pipelined" in res.stdout


def test_inputs_without_rows_and_bad_outputs_are_refused(tmp_path):
    empty = tmp_path / "empty.txt"
    empty.write_text("no json here\n")
    res = _run(empty, "--out", tmp_path / "s.png")
    assert res.returncode != 0 and "no streaming_speed JSON line" in res.stderr
    res = _run(empty, "--out", tmp_path / "s.jpg")
    assert res.returncode != 0 and "must name a .png file" in res.stderr
    res = _run(tmp_path / "missing.txt", "--out", tmp_path / "s.png")
    assert res.returncode != 0 and "no such file" in res.stderr
    assert not (tmp_path / "s.png").exists()
