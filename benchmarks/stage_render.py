"""Stage renderer throughput on one thread: frames per second at 64, 128 and 256 px.

Renders a session's worth of varied frame states (speaking, listening, actions, expressions) for
several characters and reports frames/s for the renderer alone and for whole clips (script,
speech, performance and rendering). The last stdout line is one JSON object.

    python benchmarks/stage_render.py [--frames 480]
"""

from __future__ import annotations

import argparse
import json
import time

import cv2
import numpy as np
import torch

from lpm.data.stage.character import make_character
from lpm.data.stage.clip import ClipSpec, render_clip
from lpm.data.stage.conversation import make_conversation
from lpm.data.stage.performance import perform
from lpm.data.stage.render import render_frame


def _states(n: int):
    ch = make_character(900)
    partner = make_character(901)
    rng = np.random.default_rng(0)
    conv = make_conversation(ch, partner, n / 24 + 0.1, rng, "conversation", backend="formant")
    perf = perform(ch, conv, 24, rng)
    return [perf.frame_state(i) for i in range(min(n, perf.num_frames))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=480, help="frames per size")
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    states = _states(args.frames)
    chars = [make_character(s) for s in range(8)]
    results = {}
    rows = []
    for size in (64, 128, 256):
        for ch in chars:  # warm the background and torso caches
            render_frame(ch, states[0], size)
        t0 = time.perf_counter()
        for i, st in enumerate(states):
            render_frame(chars[i % len(chars)], st, size)
        dt = time.perf_counter() - t0
        fps = len(states) / dt
        results[f"render_fps_{size}"] = round(fps, 1)
        rows.append((f"render {size}px", fps, fps / 24.0))
    spec = ClipSpec(
        performer_seed=5, partner_seed=6, seed=1, seconds=10.0, size=128, backend="auto"
    )
    t0 = time.perf_counter()
    clip = render_clip(spec, references=False)
    dt = time.perf_counter() - t0
    fps = len(clip.frames) / dt
    results["clip_fps_128"] = round(fps, 1)
    results["clip_speech_backend"] = clip.backend
    rows.append((f"whole clip 128px ({clip.backend})", fps, fps / 24.0))
    print(f"{'what (1 thread)':<34}{'frames/s':>10}{'x real time':>14}")
    for name, f, rt in rows:
        print(f"{name:<34}{f:>10.1f}{rt:>14.1f}")
    print(json.dumps({"benchmark": "stage_render", "threads": 1, **results}))


if __name__ == "__main__":
    main()
