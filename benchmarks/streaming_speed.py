"""Online LPM streaming speed on this machine: per-stage time, real-time factor, first frame.

Builds the `lpm-nano-online` architecture (backbone + refiner + light decoder, the shipped
geometry) and streams chunks of talking audio, sequentially and pipelined. Speed depends only
on the architecture, so random weights time the same as trained ones; ``--model DIR`` times a
saved online bundle instead (at its own resolution). Chunks are delivered in parts of one latent
frame, so the first frame (``frame1``) is shown before its whole chunk (``chunk1``) is decoded.

``--config lpm-1.3b-online`` (or ``lpm-17b-online``) times a real scale at its real geometry
(``--height 480 --width 832``) with the Wan2.1 VAE and wav2vec2-large, random weights, on
``--device cuda`` with the transformers in bf16 (``--dtype``); ``--decoder light`` decodes with
the light streaming decoder instead of the VAE. ``--set KEY=VALUE`` overrides model config fields
(``--set num_layers=1`` checks the path on a CPU). On a GPU the stage timings wait for the
stage's kernels, and the table gains the peak GPU memory.

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


def build(args, size: int | None):
    """The bundle a row times: ``--model``, a real ``--config`` or the nano architecture."""
    from dataclasses import replace

    from lpm.inference.bundle import ModelBundle, untrained_bundle, untrained_real_bundle

    if args.model is not None:
        bundle = ModelBundle.load(args.model, device=args.device, dtype=args.dtype)
    elif args.config != NANO:
        bundle = untrained_real_bundle(
            args.config, height=args.height, width=args.width, device=args.device,
            dtype=args.dtype, decoder=args.decoder, audio_layers=args.audio_layers,
            overrides=overrides(args.set),
        )  # fmt: skip
    else:
        bundle = untrained_bundle(NANO, size=size)
        for module in bundle.modules().values():
            module.to(args.device)
    if args.cue_scale is not None:
        bundle.spec.online = replace(bundle.spec_online_schedule(), cue_scale=args.cue_scale)
    return bundle


def overrides(items: list[str]) -> dict:
    """``--set KEY=VALUE`` as model config fields (values read as JSON, else strings)."""
    out = {}
    for item in items:
        key, sep, raw = item.partition("=")
        if not sep:
            raise SystemExit(f"--set {item!r}: write KEY=VALUE")
        try:
            out[key] = json.loads(raw)
        except json.JSONDecodeError:
            out[key] = raw
    return out


def run(bundle, chunks: int, pipelined: bool, cue: str | None = None) -> dict:
    from lpm.inference.streaming import StreamingSession

    height, width = bundle.spec.height, bundle.spec.width
    device = next(bundle.transformer.parameters()).device
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    rng = np.random.default_rng(0)
    image = rng.integers(0, 255, (height, width, 3), dtype=np.uint8)
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
        "config": bundle.cfg.name,
        "resolution": height if height == width else f"{height}x{width}",
        "dtype": str(next(bundle.transformer.parameters()).dtype).removeprefix("torch."),
        "decoder": "light" if bundle.light_decoder is not None else "vae",
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
        "peak_gpu_gb": (
            torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else None
        ),
    }


NANO = "lpm-nano-online"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--sizes", type=int, nargs="+", default=[64, 128], help="nano sizes")
    parser.add_argument("--chunks", type=int, default=12)
    parser.add_argument("--model", default=None, help="an online bundle (default: random)")
    parser.add_argument("--config", default=NANO, help="a real online config, random weights")
    parser.add_argument("--height", type=int, default=480, help="frame height (--config)")
    parser.add_argument("--width", type=int, default=832, help="frame width (--config)")
    parser.add_argument("--decoder", default="vae", choices=("vae", "light"), help="(--config)")
    parser.add_argument("--audio-layers", type=int, default=24, help="wav2vec2 layers (--config)")
    parser.add_argument("--set", action="append", default=[], help="model config KEY=VALUE")
    parser.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N")
    parser.add_argument("--dtype", default="auto", help="auto (bf16 on a GPU), fp32 or bf16")
    parser.add_argument("--pipelined", default="both", choices=("both", "yes", "no"))
    parser.add_argument("--cue", default=None, help="a timed cue on every chunk (text_cues model)")
    parser.add_argument("--cue-scale", type=float, default=None, help="stream cue guidance")
    args = parser.parse_args()
    torch.manual_seed(0)
    sizes = args.sizes if args.model is None and args.config == NANO else [None]
    modes = {"both": (False, True), "yes": (True,), "no": (False,)}[args.pipelined]
    rows = []
    for size in sizes:
        bundle = build(args, size)
        rows += [run(bundle, args.chunks, p, args.cue) for p in modes]
        del bundle
    for row in rows:  # which weights: a bundle directory's or random ones
        row["weights"] = args.model or "random"
    device = torch.device(args.device)
    if device.type == "cuda":
        print(f"device={torch.cuda.get_device_name(device)}")
    print(f"threads={torch.get_num_threads()} cpus={os.cpu_count()}")
    cols = ("res", "pipe", "frame1(s)", "warm(s)", "chunk1(s)", "warm(s)", "chunk(s)", "RTF",
            "cond", "backbone", "refiner", "decode", "GPU(GB)")  # fmt: skip
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
            "-" if r["peak_gpu_gb"] is None else f"{r['peak_gpu_gb']:.1f}",
        )
        print(" ".join(f"{v:>9}" for v in vals))
    print(json.dumps({"benchmark": "streaming_speed", "rows": rows}))


if __name__ == "__main__":
    main()
