"""The run directory's JSONL metrics log and its loss / learning-rate plots."""

from __future__ import annotations

import json
import logging
import subprocess
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.jsonl"


class MetricsLog:
    """Append-only JSON-lines log of per-step records (written by rank 0 only)."""

    def __init__(self, run_dir: Path) -> None:
        self.path = Path(run_dir) / METRICS_NAME

    def append(self, record: dict[str, Any]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")

    def read(self) -> list[dict[str, Any]]:
        """Every complete record (a line cut short by a crash is skipped)."""
        if not self.path.is_file():
            return []
        out = []
        for line in self.path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except json.JSONDecodeError:
                log.warning("skipping a malformed line in %s", self.path)
        return out

    def truncate(self, max_step: int) -> None:
        """Keep only records with ``step <= max_step`` (on resume from that step)."""
        records = [r for r in self.read() if r.get("step", 0) <= max_step]
        tmp = self.path.with_suffix(".jsonl.tmp")
        tmp.write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in records))
        tmp.replace(self.path)


PlotSeries = tuple[str, str, str, bool]
"""(metrics key, y-axis label, file name, log scale) of one plot."""
DEFAULT_SERIES: tuple[PlotSeries, ...] = (
    ("loss", "flow-matching loss", "loss.png", True),
    ("lr", "learning rate", "lr.png", False),
)


def plot_metrics(
    run_dir: Path, records: list[dict[str, Any]], series: tuple[PlotSeries, ...] = DEFAULT_SERIES
) -> list[Path]:
    """Write one plot per ``series`` (default ``loss.png`` and ``lr.png``) next to the metrics;
    returns the written files."""
    if not records:
        return []
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    steps = [r["step"] for r in records]
    written = []
    for key, ylabel, fname, logy in series:
        fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
        ax.plot(steps, [r[key] for r in records], lw=1)
        ax.set_xlabel("step")
        ax.set_ylabel(ylabel)
        if logy and all(r[key] > 0 for r in records):
            ax.set_yscale("log")
        stage_starts = [
            r for i, r in enumerate(records) if i and r["stage"] != records[i - 1]["stage"]
        ]
        for r in stage_starts:
            ax.axvline(r["step"], color="grey", lw=0.5, ls="--")
        ax.grid(alpha=0.3)
        fig.tight_layout()
        path = Path(run_dir) / fname
        fig.savefig(path)
        plt.close(fig)
        written.append(path)
    return written


def git_revision() -> str | None:
    """The git commit of the installed package's source tree, or None outside a checkout."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent,
            capture_output=True, text=True, timeout=10, check=True,
        )  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip() or None
