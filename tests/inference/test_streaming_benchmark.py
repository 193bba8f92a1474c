"""`benchmarks/streaming_speed.py`: the nano architecture and a real scale's path, shrunk."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "benchmarks" / "streaming_speed.py"


def _rows(*args: str) -> tuple[str, list[dict]]:
    proc = subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True,
                          timeout=600, check=True)  # fmt: skip
    return proc.stdout, json.loads(proc.stdout.strip().splitlines()[-1])["rows"]


def test_nano_rows_sequential_and_pipelined():
    out, rows = _rows("--sizes", "32", "--chunks", "3")
    assert [(r["config"], r["resolution"], r["pipelined"]) for r in rows] == [
        ("lpm-nano-online", 32, False),
        ("lpm-nano-online", 32, True),
    ]
    assert all(r["steady_rtf"] > 0 and r["peak_gpu_gb"] is None for r in rows)
    assert "RTF" in out


@pytest.mark.slow
def test_a_real_scale_streams_at_its_geometry_with_its_encoders():
    """lpm-1.3b-online's widths (text 4096, audio 1024), one DiT layer and two wav2vec2 layers,
    decoded by the light decoder: the path a GPU run times at full size. (The Wan2.1 VAE's
    chunk decode, the other choice, is tested in tests/encoders.)"""
    _, rows = _rows("--config", "lpm-1.3b-online", "--height", "32", "--width", "48",
                    "--set", "num_layers=1", "--audio-layers", "2", "--chunks", "2",
                    "--pipelined", "no", "--decoder", "light")  # fmt: skip
    (row,) = rows
    assert row["config"] == "lpm-1.3b-online" and row["resolution"] == "32x48"
    assert row["decoder"] == "light" and row["dtype"] == "float32"
    assert set(row["stage_s"]) == {"conditions", "backbone", "refiner", "decode"}
