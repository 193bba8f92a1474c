"""Online LPM streaming speed on this machine: per-stage time, real-time factor, first frame.

Builds the `lpm-nano-online` architecture (backbone + refiner + light decoder, the shipped
geometry) and streams chunks of talking audio, sequentially and pipelined. Speed depends only
on the architecture, so random weights time the same as trained ones; ``--model DIR`` times a
saved online bundle instead (at its own resolution). Chunks are delivered in parts of one latent
frame, so the first frame (``frame1``) is shown before its whole chunk (``chunk1``) is decoded.

Prints a table; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time

import numpy as np
import torch


def run(
    size: int, chunks: int, pipelined: bool, model=None, cue: str | None = None, cue_scale=None
) -> dict:
    from dataclasses import replace

    from lpm.inference.bundle import ModelBundle, untrained_bundle
    from lpm.inference.streaming import StreamingSession

    if model is not None:
        bundle = ModelBundle.load(model)
        size = bundle.spec.height
    else:
        bundle = untrained_bundle("lpm-nano-online", size=size)
    if cue_scale is not None:
        bundle.spec.online = replace(bundle.spec_online_schedule(), cue_scale=cue_scale)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (size, size, 3), dtype=np.uint8)
    t0 = time.perf_counter()
    session = StreamingSession(bundle, image, prompt="a cheerful person nods")
    t_session = time.perf_counter() - t0
    if cue is not None:  # every chunk cued: the stream's most expensive case
        session.set_cues(cue)
    t = np.arange(16000 * (chunks + 3)) / 16000
    session.push_audio(
        "speak",
        (0.3 * np.sin(2 * np.pi * 180 * t) * (np.sin(2 * np.pi * 3 * t) > 0)).astype(np.float32),
    )
    session.push_audio("listen", (0.1 * rng.standard_normal(len(t))).astype(np.float32))
    # Chunks are delivered in parts of one latent frame (4 video frames): the first frame can
    # be shown once the first part is decoded; a chunk is complete with its last part.
    stamps, stages, first_frame = [], [], None
    start = time.perf_counter()
    for part in session.chunks(chunks, pipelined=pipelined, lookahead=2, part_latents=1):
        if first_frame is None:
            first_frame = time.perf_counter() - start
        if part.last:
            stamps.append(time.perf_counter() - start)
            stages.append(part.timings)
    wall = stamps[-1]
    # a new session on the warmed process, as a server starts one for each user: the time from
    # its first audio to its first frame and first whole chunk (conditions, backbone, refiner,
    # decode)
    again = StreamingSession(bundle, image, prompt="a cheerful person nods")
    again.push_audio("speak", (0.3 * np.sin(2 * np.pi * 180 * t[:16000])).astype(np.float32))
    t0 = time.perf_counter()
    parts = again.chunks(1, part_latents=1)
    next(parts)
    first_frame_warm = time.perf_counter() - t0
    for _ in parts:
        pass
    first_warm = time.perf_counter() - t0
    steady = np.diff(stamps[2:]) if len(stamps) > 3 else np.diff(stamps)
    per_stage = {k: float(np.median([s[k] for s in stages[1:]])) for k in stages[0]}
    video_s = chunks * bundle.cfg.chunk_seconds
    return {
        "resolution": size,
        "pipelined": pipelined,
        "cue": cue,
        "cue_scale": bundle.spec_online_schedule().cue_scale,
        "chunks": chunks,
        "session_setup_s": t_session,
        "first_frame_s": first_frame,
        "first_frame_warm_s": first_frame_warm,
        "first_chunk_s": stamps[0],
        "first_chunk_warm_s": first_warm,
        "steady_chunk_s": float(np.median(steady)),
        "rtf": video_s / wall,
        "steady_rtf": bundle.cfg.chunk_seconds / float(np.median(steady)),
        "stage_s": per_stage,
        "max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--chunks", type=int, default=12)
    parser.add_argument("--model", default=None, help="an online bundle (default: random)")
    parser.add_argument("--cue", default=None, help="a timed cue on every chunk (text_cues model)")
    parser.add_argument("--cue-scale", type=float, default=None, help="stream cue guidance")
    args = parser.parse_args()
    torch.manual_seed(0)
    sizes = [None] if args.model else args.sizes
    rows = [
        run(s, args.chunks, p, args.model, args.cue, args.cue_scale)
        for s in sizes
        for p in (False, True)
    ]
    print(f"threads={torch.get_num_threads()} cpus={os.cpu_count()}")
    cols = ("res", "pipe", "frame1(s)", "warm(s)", "chunk1(s)", "warm(s)", "chunk(s)", "RTF",
            "cond", "backbone", "refiner", "decode")  # fmt: skip
    print(" ".join(f"{c:>9}" for c in cols))
    for r in rows:
        st = r["stage_s"]
        vals = (
            r["resolution"],
            str(r["pipelined"]),
            f"{r['first_frame_s']:.3f}",
            f"{r['first_frame_warm_s']:.3f}",
            f"{r['first_chunk_s']:.3f}",
            f"{r['first_chunk_warm_s']:.3f}",
            f"{r['steady_chunk_s']:.3f}",
            f"{r['steady_rtf']:.2f}",
            f"{st['conditions']:.3f}",
            f"{st['backbone']:.3f}",
            f"{st['refiner']:.3f}",
            f"{st['decode']:.3f}",
        )
        print(" ".join(f"{v:>9}" for v in vals))
    print(json.dumps({"benchmark": "streaming_speed", "rows": rows}))


if __name__ == "__main__":
    main()
