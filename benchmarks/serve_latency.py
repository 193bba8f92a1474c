"""`lpm serve` on loopback: reaction latency, delivered fps, concurrent real-time sessions, soak.

Serves the shipped lpm-nano-online (or ``--model DIR``; ``--random-weights``: the same
architecture untrained, which times the same) in this process and drives it with
`lpm.serve.loadgen` users (real WebSocket clients on 127.0.0.1):

  latency      one session: first user audio -> first listening frame, agent audio -> first
               responding frame (client-measured), delivered fps
  concurrency  1..N sessions at once; a session is real-time when it receives >= 23 fps after
               warm-up and at most 10% of its chunks miss their deadline
  soak         (--soak SECONDS) SESSIONS sessions for that long; server RSS over time

Prints a table; the last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import time
from pathlib import Path

import numpy as np


def voices() -> tuple[np.ndarray, np.ndarray]:
    from lpm.data.stage import make_character
    from lpm.data.stage.speech import synthesize

    user = synthesize(
        "Hello! Could you tell me about the weather today?", make_character(90_004).voice
    )
    agent = synthesize("Sure. It is sunny and warm, a lovely day.", make_character(90_000).voice)
    return user, agent


def summarise(traces, seconds: float) -> dict:
    listen = [x for t in traces for x in t.listen_latency_s]
    respond = [x for t in traces for x in t.respond_latency_s]
    realtime = [t.fps >= 23.0 and t.late <= 0.1 * max(1, t.chunks) for t in traces]
    return {
        "sessions": len(traces),
        "seconds": seconds,
        "fps_min": min(t.fps for t in traces),
        "fps_mean": float(np.mean([t.fps for t in traces])),
        "late_chunks": sum(t.late for t in traces),
        "chunks": sum(t.chunks for t in traces),
        "first_frame_s": float(np.median([t.first_frame_s or np.nan for t in traces])),
        "listen_latency_s": float(np.median(listen)) if listen else None,
        "listen_latency_max_s": max(listen) if listen else None,
        "respond_latency_s": float(np.median(respond)) if respond else None,
        "respond_latency_max_s": max(respond) if respond else None,
        "all_realtime": all(realtime),
        "errors": sum(len(t.errors) for t in traces),
    }


async def soak(url: str, sessions: int, seconds: float, user, agent) -> dict:
    from lpm.serve.loadgen import drive_many, rss_mb

    samples: list[tuple[float, float]] = []

    async def sample() -> None:
        t0 = time.monotonic()
        while True:
            samples.append((time.monotonic() - t0, rss_mb()))
            await asyncio.sleep(5.0)

    task = asyncio.create_task(sample())
    traces = await drive_many(url, sessions, seconds, user, agent)
    task.cancel()
    warm = [m for t, m in samples if t >= 0.2 * seconds] or [samples[-1][1]]
    out = summarise(traces, seconds)
    out.update(rss_start_mb=warm[0], rss_end_mb=warm[-1], rss_peak_mb=max(m for _, m in samples))
    out["rss_growth_mb"] = out["rss_end_mb"] - out["rss_start_mb"]
    out["rss_series_mb"] = [(round(t, 1), round(m, 1)) for t, m in samples]
    return out


def main() -> None:
    from lpm.serve.config import ServeConfig
    from lpm.serve.loadgen import drive_many
    from lpm.serve.loading import load_served_model
    from lpm.serve.server import BackgroundServer

    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", type=Path, default=None, help="online bundle (shipped)")
    parser.add_argument("--random-weights", action="store_true", help="random lpm-nano-online")
    parser.add_argument("--size", type=int, default=64, help="frame side (random weights)")
    parser.add_argument("--seconds", type=float, default=32.0, help="per latency/concurrency run")
    parser.add_argument("--max-sessions", type=int, default=4)
    parser.add_argument("--soak", type=float, default=0.0, help="soak seconds (0: skip)")
    parser.add_argument("--soak-sessions", type=int, default=4)
    args = parser.parse_args()

    served = load_served_model(args.model, random_weights=args.random_weights, size=args.size)
    user, agent = voices()
    cfg = ServeConfig(port=0, max_sessions=max(args.max_sessions, args.soak_sessions))
    rows, soak_row = [], None
    with BackgroundServer(served, cfg) as srv:
        for n in range(1, args.max_sessions + 1):
            traces = asyncio.run(drive_many(srv.url, n, args.seconds, user, agent))
            rows.append(summarise(traces, args.seconds))
        if args.soak > 0:
            soak_row = asyncio.run(soak(srv.url, args.soak_sessions, args.soak, user, agent))
    realtime = max([r["sessions"] for r in rows if r["all_realtime"]], default=0)
    print(
        f"model={served.name} size={args.size} cpus={os.cpu_count()} load={os.getloadavg()[0]:.1f}"
    )
    cols = ("sessions", "fps_min", "late", "first(s)", "listen(s)", "respond(s)", "realtime")
    print(" ".join(f"{c:>10}" for c in cols))
    for r in rows:
        vals = (
            r["sessions"],
            f"{r['fps_min']:.1f}",
            r["late_chunks"],
            f"{r['first_frame_s']:.2f}",
            f"{r['listen_latency_s'] or float('nan'):.2f}",
            f"{r['respond_latency_s'] or float('nan'):.2f}",
            str(r["all_realtime"]),
        )
        print(" ".join(f"{v:>10}" for v in vals))
    if soak_row:
        print(
            f"soak {soak_row['sessions']} x {soak_row['seconds']:.0f} s: fps_min "
            f"{soak_row['fps_min']:.1f}, late {soak_row['late_chunks']}/{soak_row['chunks']}, "
            f"RSS {soak_row['rss_start_mb']:.0f} -> {soak_row['rss_end_mb']:.0f} MB"
        )
    result = {
        "benchmark": "serve_latency",
        "model": served.name,
        "size": args.size,
        "cpus": os.cpu_count(),
        "load_avg_1m": os.getloadavg()[0],
        "concurrent_realtime_sessions": realtime,
        "rows": rows,
        "soak": soak_row,
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
