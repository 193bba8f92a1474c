"""Plot `benchmarks/streaming_speed.py` results: where each chunk's time goes, against real time.

Reads the JSON line(s) that `streaming_speed.py` prints last (from its saved output, e.g. the
`stream-*.txt` files of `benchmarks/gpu_tables.sh`) and draws one bar per row: the steady time
a chunk takes, split into the stages' medians for sequential rows (pipelined stages overlap, so
those rows show the total only), with a line at the chunk's own duration, the real-time budget.
The table it prints ends with one JSON object.

    python benchmarks/plot_streaming.py gpu-tables/stream-*.txt --out streaming.png
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

STAGES = ("conditions", "backbone", "refiner", "decode")


def read_rows(paths: list[Path]) -> list[dict]:
    """Every row of every `streaming_speed` JSON line in ``paths``, in order."""
    rows = []
    for path in paths:
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith('{"benchmark": "streaming_speed"'):
                rows += json.loads(line)["rows"]
    return rows


def label(row: dict) -> str:
    mode = "pipelined" if row["pipelined"] else "sequential"
    weights = row.get("weights")
    which = "" if weights is None else (" (random)" if weights == "random" else " (trained)")
    return f"{row['config']}{which} {row['resolution']} {row['decoder']}, {mode}"


def plot(rows: list[dict], out: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(9, 0.55 * len(rows) + 1.6))
    colors = dict(zip(STAGES, ("#8da0cb", "#fc8d62", "#66c2a5", "#e78ac3"), strict=True))
    for i, row in enumerate(rows):
        y = len(rows) - 1 - i
        if row["pipelined"]:
            ax.barh(y, row["steady_chunk_s"], color="#bbbbbb", edgecolor="black", linewidth=0.5)
        else:
            left = 0.0
            for stage in STAGES:
                width = row["stage_s"][stage]
                ax.barh(y, width, left=left, color=colors[stage], edgecolor="black",
                        linewidth=0.5, label=stage if i == 0 else None)  # fmt: skip
                left += width
        chunk_s = row["steady_rtf"] * row["steady_chunk_s"]
        ax.plot([chunk_s, chunk_s], [y - 0.45, y + 0.45], color="black", ls="--", lw=1.2)
        ax.text(row["steady_chunk_s"], y, f"  {row['steady_chunk_s']:.2f} s", va="center")
    ax.set_yticks(range(len(rows)), [label(r) for r in reversed(rows)])
    ax.set_xlabel("seconds a chunk (steady); dashed: the chunk's own duration (real time)")
    ax.set_title(title)
    handles, names = ax.get_legend_handles_labels()
    ax.legend(handles, names, loc="lower right", fontsize=8)
    ax.set_xlim(0, max(r["steady_chunk_s"] for r in rows) * 1.25)
    fig.tight_layout()
    tmp = out.with_name(out.name + ".partial.png")
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("inputs", type=Path, nargs="+", help="saved streaming_speed output")
    parser.add_argument("--out", type=Path, required=True, help="PNG to write")
    parser.add_argument("--title", default="Streaming: where a chunk's time goes")
    args = parser.parse_args()
    missing = [str(p) for p in args.inputs if not p.is_file()]
    if missing:
        sys.exit(f"error: no such file: {', '.join(missing)}")
    if args.out.suffix.lower() != ".png" or args.out.is_dir():
        sys.exit(f"error: --out {args.out} must name a .png file")
    rows = read_rows(args.inputs)
    if not rows:
        sys.exit("error: no streaming_speed JSON line in the inputs (its last stdout line)")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    plot(rows, args.out, args.title)
    print(f"{'row':<58} {'chunk(s)':>9} {'RTF':>6}")
    for row in rows:
        print(f"{label(row):<58} {row['steady_chunk_s']:>9.3f} {row['steady_rtf']:>6.2f}")
    print(json.dumps({"benchmark": "plot_streaming", "rows": len(rows), "out": str(args.out)}))


if __name__ == "__main__":
    main()
