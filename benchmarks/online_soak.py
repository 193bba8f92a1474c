"""Flat cost of a never-ending Online LPM stream: memory, per-chunk time and identity over time.

Streams ``--chunks`` 1-s chunks (2,000 = 33 min of video) of one held-out Stage character with
an online bundle, feeding audio chunk by chunk as a live session would: a cycle of the demo's
speak track, silence, the demo's listen track, silence. For every chunk it records the wall
time of each stage, the process RSS, and the identity similarity (Stage probes) of three of its
frames to the character image. Reports per-block means, least-squares slopes (per-chunk time
and RSS per 1,000 chunks; identity per 10 minutes of video) and writes a plot.

    python benchmarks/online_soak.py [--model ONLINE_BUNDLE] [--chunks 2000] [--plot PNG]

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def audio_cycle(rate: int) -> tuple[np.ndarray, np.ndarray]:
    """(speak, listen) tracks of one cycle: speak, 4 s silence, listen, 4 s silence."""
    from lpm.inference.demo import demo_inputs
    from lpm.models.audio import load_audio

    inputs = demo_inputs()
    speak = load_audio(inputs.speak, rate)
    listen = load_audio(inputs.listen, rate)
    gap = np.zeros(4 * rate, np.float32)
    zeros = lambda n: np.zeros(n, np.float32)  # noqa: E731
    speak_track = np.concatenate([speak, gap, zeros(len(listen)), gap])
    listen_track = np.concatenate([zeros(len(speak)), gap, listen, gap])
    return speak_track, listen_track


def slope(x: np.ndarray, y: np.ndarray) -> float:
    return float(np.polyfit(x, y, 1)[0])


def run(model: Path, chunks: int, seed: int) -> dict:
    from lpm.bench.probes import load_probes
    from lpm.inference.bundle import ModelBundle
    from lpm.inference.demo import demo_inputs
    from lpm.inference.streaming import StreamingSession
    from lpm.media import fit_image, read_image

    bundle = ModelBundle.load(model)
    probes = load_probes()
    size = bundle.spec.height
    image = fit_image(read_image(demo_inputs().image), size, size)
    ref = probes.identity_embedding(image[None])[0]
    ref = ref / np.linalg.norm(ref)
    rate = bundle.spec.sample_rate
    speak, listen = audio_cycle(rate)
    session = StreamingSession(bundle, image, prompt="a calm person in a conversation", seed=seed)
    per = int(round(rate * bundle.cfg.chunk_seconds))
    rows = []
    from tqdm import tqdm

    for n in tqdm(range(chunks), desc="chunks", mininterval=5):
        lo = (n * per) % len(speak)
        session.push_audio("speak", np.take(speak, np.arange(lo, lo + per), mode="wrap"))
        session.push_audio("listen", np.take(listen, np.arange(lo, lo + per), mode="wrap"))
        t0 = time.perf_counter()
        chunk = session.step()
        wall = time.perf_counter() - t0
        picks = chunk.frames[[0, len(chunk.frames) // 2, -1]]
        emb = probes.identity_embedding(picks)
        emb = emb / np.linalg.norm(emb, axis=1, keepdims=True)
        rows.append({"chunk": n, "wall_s": wall, "rss_mb": rss_mb(),
                     "identity": float((emb @ ref).mean()), **chunk.timings})  # fmt: skip
    return {"bundle": str(model), "size": size, "rows": rows}


def summarise(result: dict, block: int) -> dict:
    rows = result["rows"]
    n = np.arange(len(rows), dtype=np.float64)
    wall = np.array([r["wall_s"] for r in rows])
    rss = np.array([r["rss_mb"] for r in rows])
    ident = np.array([r["identity"] for r in rows])
    settled = n >= min(20, len(rows) // 2)  # warm-up: caches filling, allocator growing
    minutes = (n + 0.5) / 60.0  # one chunk = 1 s of video
    blocks = []
    for lo in range(0, len(rows), block):
        sl = slice(lo, lo + block)
        blocks.append({
            "chunks": f"{lo}-{min(lo + block, len(rows)) - 1}",
            "wall_s": float(wall[sl].mean()),
            "wall_p95_s": float(np.percentile(wall[sl], 95)),
            "rss_mb": float(rss[sl].mean()),
            "identity": float(ident[sl].mean()),
        })  # fmt: skip
    return {
        "chunks": len(rows),
        "blocks": blocks,
        "wall_slope_s_per_1000_chunks": 1000 * slope(n[settled], wall[settled]),
        "rss_slope_mb_per_1000_chunks": 1000 * slope(n[settled], rss[settled]),
        "rss_first_mb": float(rss[settled][0]),
        "rss_last_mb": float(rss[-1]),
        "identity_mean": float(ident.mean()),
        "identity_slope_per_10_min": 10 * slope(minutes, ident),
        "stage_median_s": {
            k: float(np.median([r[k] for r in rows[1:]]))
            for k in ("conditions", "backbone", "refiner", "decode")
        },  # fmt: skip
        "video_s_per_wall_s": len(rows) / float(wall.sum()),
    }


def plot(result: dict, summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = result["rows"]
    minutes = np.arange(len(rows)) / 60.0
    fig, axes = plt.subplots(3, 1, figsize=(8, 7), sharex=True)
    series = (("wall_s", "s per 1-s chunk"), ("rss_mb", "RSS (MB)"), ("identity", "identity"))
    for ax, (key, label) in zip(axes, series, strict=True):
        y = np.array([r[key] for r in rows])
        ax.plot(minutes, y, lw=0.6, alpha=0.6)
        w = 30
        if len(y) > w:
            ax.plot(minutes[w - 1 :], np.convolve(y, np.ones(w) / w, "valid"), lw=1.6)
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_title(
        f"{Path(result['bundle']).name}, {summary['chunks']} chunks at {result['size']} px: "
        f"RSS {summary['rss_slope_mb_per_1000_chunks']:+.1f} MB/1000 chunks, identity "
        f"{summary['identity_slope_per_10_min']:+.4f} per 10 min",
        fontsize=9,
    )
    axes[-1].set_xlabel("video minutes")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="online bundle (shipped)")
    parser.add_argument("--chunks", type=int, default=2000)
    parser.add_argument("--block", type=int, default=200, help="chunks per table row")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", type=Path, default=Path("online_soak.png"))
    parser.add_argument("--rows", type=Path, default=None, help="write per-chunk rows (JSONL)")
    args = parser.parse_args()
    from lpm.inference import shipped_bundle_path

    model = args.model or shipped_bundle_path("lpm-nano-online")
    result = run(model, args.chunks, args.seed)
    summary = summarise(result, args.block)
    if args.rows:
        args.rows.write_text("".join(json.dumps(r) + "\n" for r in result["rows"]))
    plot(result, summary, args.plot)
    print(f"{'chunks':>12}{'s/chunk':>10}{'p95':>8}{'RSS MB':>9}{'identity':>10}")
    for b in summary["blocks"]:
        print(f"{b['chunks']:>12}{b['wall_s']:>10.3f}{b['wall_p95_s']:>8.3f}"
              f"{b['rss_mb']:>9.1f}{b['identity']:>10.3f}")  # fmt: skip
    print(f"slopes: {summary['wall_slope_s_per_1000_chunks']:+.4f} s per chunk per 1000 chunks; "
          f"RSS {summary['rss_slope_mb_per_1000_chunks']:+.2f} MB per 1000 chunks; identity "
          f"{summary['identity_slope_per_10_min']:+.4f} per 10 min of video")  # fmt: skip
    print(json.dumps({"benchmark": "online_soak", **summary, "plot": str(args.plot)}))


if __name__ == "__main__":
    main()
