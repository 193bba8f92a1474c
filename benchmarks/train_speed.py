"""Training throughput of `lpm-nano` on this machine: optimiser steps/s and samples/s.

The `nano-base` clip, 2 s at 64x64, is latents (16, 12, 8, 8): 12 latent frames of 4x4 = 16 tokens
each after the (1, 2, 2) patch, plus one token frame per reference. Synthetic tensors of the same
shapes stand in for the feature cache (the step cost does not depend on the values). Steps run
in-process through `Trainer.train_step` (no checkpoints), in the ``listen`` stage (both audio
streams, first-frame reference) and the ``long`` stage (global reference, sometimes body /
expression references, clean context frames). The last stdout line is one JSON object.

    python benchmarks/train_speed.py [--batch-sizes 1 2] [--steps 5] [--warmup 2]
    python benchmarks/train_speed.py --set model=lpm-1.3b --batch-sizes 1   # on a GPU
    python benchmarks/train_speed.py --recipe base-1.3b --batch-sizes 1 --steps 3 --warmup 1

``--recipe`` and ``--set KEY=VALUE`` (as `lpm train`) time another recipe or model scale;
``base-1.3b`` and ``base-17b`` train 5-s 480x832 clips (latents (16, 30, 60, 104), 46,800
tokens) one clip per forward with activation checkpointing. On a CUDA machine the trainer runs
there, in bf16 autocast, and the peak GPU memory of the timed steps is reported. A setting that
does not fit in GPU memory is reported as such and the next one runs. Under torchrun the steps
run under FSDP2 on every rank (``--batch-sizes`` are global batches; rank 0 prints), e.g. the
17B model, which no single GPU holds:

    torchrun --standalone --nproc_per_node=8 benchmarks/train_speed.py --recipe base-17b \\
        --batch-sizes 8 --steps 3 --warmup 1 --stages long
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time

import torch

from lpm.parallel import DistInfo, init_distributed, teardown_distributed
from lpm.train import Trainer, apply_overrides, get_recipe


def measure(
    batch_size: int,
    stage: str,
    steps: int,
    warmup: int,
    recipe_name: str = "nano-base",
    overrides: tuple[str, ...] = (),
    dist_info: DistInfo | None = None,
) -> dict:
    fixed = [f"batch_size={batch_size}", "data=synthetic", "checkpoint_every=0", "dataset_size=256"]
    recipe = apply_overrides(get_recipe(recipe_name), [*overrides, *fixed])
    names = [s.name for s in recipe.stages]
    if stage not in names:
        raise SystemExit(f"recipe {recipe_name} has no stage {stage!r}; its stages: {names}")
    cuda = torch.cuda.is_available()
    row = {"model": recipe.model, "overrides": list(overrides), "stage": stage,
           "batch_size": batch_size, "micro_batch_size": recipe.micro_batch_size or batch_size,
           "latents": [16, *recipe.latent_shape]}  # fmt: skip
    trainer = None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            trainer = Trainer(recipe, tmp, dist_info=dist_info or DistInfo(), progress=False)
            trainer.step = sum(s.steps for s in recipe.stages[: names.index(stage)])
            for _ in range(warmup):
                trainer.train_step()
            if cuda:
                torch.cuda.synchronize()
                torch.cuda.reset_peak_memory_stats()
            start = time.perf_counter()
            for _ in range(steps):
                trainer.train_step()
            if cuda:
                torch.cuda.synchronize()
            elapsed = time.perf_counter() - start
    except torch.OutOfMemoryError:  # too big for this GPU: say so and go on to the next row
        return {**row, "error": "out of GPU memory", "steps_per_s": None, "samples_per_s": None,
                "s_per_step": None, "peak_gpu_gib": None}  # fmt: skip
    finally:
        del trainer
        if cuda:
            torch.cuda.empty_cache()
    peak = torch.cuda.max_memory_allocated() / 2**30 if cuda else None
    return {**row, "steps_per_s": steps / elapsed, "samples_per_s": steps * batch_size / elapsed,
            "s_per_step": elapsed / steps, "peak_gpu_gib": peak}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=[8])
    parser.add_argument("--stages", nargs="+", default=["listen", "long"])
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--recipe", default="nano-base", help="training recipe (`lpm train`)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override, as `lpm train --set`")  # fmt: skip
    args = parser.parse_args()
    dist_info = init_distributed()
    rows = [
        measure(b, s, args.steps, args.warmup, args.recipe, tuple(args.overrides), dist_info)
        for s in args.stages
        for b in args.batch_sizes
    ]
    teardown_distributed()
    if not dist_info.is_main:
        return
    device = (
        torch.cuda.get_device_name() if torch.cuda.is_available()
        else f"cpu ({torch.get_num_threads()} thread{'s' if torch.get_num_threads() > 1 else ''})"
    )  # fmt: skip
    if dist_info.world_size > 1:
        device = f"{dist_info.world_size} x {device}, FSDP2"
    model = rows[0]["model"] if rows else args.recipe
    print(f"{model} ({args.recipe}) training throughput on {device}, torch {torch.__version__}")
    print(f"latents {rows[0]['latents'] if rows else '-'}")
    print(f"{'stage':<8} {'batch':>5} {'micro':>5} {'steps/s':>9} {'samples/s':>10} "
          f"{'s/step':>8} {'peak GiB':>8}")  # fmt: skip
    for r in rows:
        if r.get("error"):
            print(f"{r['stage']:<8} {r['batch_size']:>5} {r['micro_batch_size']:>5}  {r['error']}")
            continue
        peak = "-" if r["peak_gpu_gib"] is None else f"{r['peak_gpu_gib']:.1f}"
        print(f"{r['stage']:<8} {r['batch_size']:>5} {r['micro_batch_size']:>5} "
              f"{r['steps_per_s']:>9.3f} {r['samples_per_s']:>10.3f} {r['s_per_step']:>8.3f} "
              f"{peak:>8}")  # fmt: skip
    print(json.dumps({"device": device, "torch": torch.__version__, "rows": rows}))


if __name__ == "__main__":
    main()
