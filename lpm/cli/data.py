"""`lpm data ...`: build datasets (the Stage world, real footage) and feature caches."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="Build datasets: the Stage world and real footage.", no_args_is_help=True)


@app.command("stage")
def stage(
    out: Path = typer.Option(..., "--out", help="Output directory (an existing one is resumed)."),
    clips: int = typer.Option(16, "--clips", help="Number of clips (scenes with --raw)."),
    seconds: float = typer.Option(5.0, "--seconds", help="Clip length in seconds."),
    resolution: int = typer.Option(128, "--resolution", help="Frame size in pixels (even)."),
    seed: int = typer.Option(0, "--seed", help="Dataset seed; the same seed, the same data."),
    fps: int = typer.Option(24, "--fps", help="Frames per second."),
    split: str = typer.Option("train", "--split", help="Identity split: train or heldout."),
    backend: str = typer.Option("auto", "--backend", help="Speech: auto, espeak or formant."),
    raw: bool = typer.Option(False, "--raw", help="Raw multi-person footage + ground truth."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Render the Stage world: cartoon characters speaking, listening and idling."""
    from lpm.data.stage.writer import StageDatasetConfig, build_dataset

    try:
        cfg = StageDatasetConfig(
            out=out,
            clips=clips,
            seconds=seconds,
            resolution=resolution,
            seed=seed,
            fps=fps,
            split=split,
            backend=backend,
            raw=raw,
        )
        entries = build_dataset(cfg, progress=progress)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from err
    typer.echo(f"{len(entries)} {'scenes' if raw else 'clips'} in {out}")


@app.command("encode")
def encode(
    data: Path = typer.Option(..., "--data", help="Dataset directory (manifest.jsonl + clips/)."),
    out: Path = typer.Option(..., "--out", help="Cache directory (an existing one is resumed)."),
    model: Path = typer.Option(
        None, "--model", help="Bundle whose encoders to use (default: shipped)."
    ),
    shard_clips: int = typer.Option(64, "--shard-clips", help="Clips per safetensors shard."),
    on_error: str = typer.Option("skip", "--on-error", help="skip (report, go on) or fail."),
    mirror: bool = typer.Option(
        False,
        "--mirror",
        help="Also encode every clip mirrored left to right (left/right "
        "swapped in captions, cues, body views and turn labels).",
    ),
    device: str = typer.Option(
        "auto",
        "--device",
        help="auto (a GPU when there is one), cpu or cuda (under torchrun: one GPU per rank).",
    ),
    prefetch: int | None = typer.Option(
        None,
        "--prefetch",
        help="Clips read ahead on a thread while the encoders work (default: 2 with cuda, "
        "0 on the CPU, where reading and encoding share the cores).",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Cache VAE latents, audio and text features of a dataset into safetensors shards.

    Under torchrun each rank encodes its share of the clips on its own device."""
    from tqdm import tqdm

    from lpm.data.encode import ClipEncoder, ClipError, EncodeConfig, encode_dataset
    from lpm.inference.bundle import load_encoders, shipped_bundle_path
    from lpm.parallel import init_distributed, teardown_distributed

    try:  # the ranks may finish hours apart on a large dataset: a long collective timeout
        dist_info = init_distributed(device, timeout_s=24 * 3600.0)
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    try:
        spec, vae, text, audio = load_encoders(
            model or shipped_bundle_path(), device=dist_info.device
        )
        if prefetch is None:
            prefetch = 2 if dist_info.device.type == "cuda" else 0
        cfg = EncodeConfig(data=data, out=out, shard_clips=shard_clips, on_error=on_error,
                           mirror=mirror, prefetch=prefetch)  # fmt: skip
        bars = []  # the bar appears with the first clip, so an input error prints alone

        def tick(done: int, total: int) -> None:
            if not bars:
                bars.append(tqdm(desc="encode", unit="clip", total=total,
                                 disable=not (progress and dist_info.is_main)))  # fmt: skip
            bars[0].total, bars[0].n = total, done
            bars[0].refresh()

        report = encode_dataset(
            cfg, ClipEncoder(vae, text, audio, spec.sample_rate), tick,
            rank=dist_info.rank, world_size=dist_info.world_size,
        )  # fmt: skip
        for bar in bars:
            bar.close()
    except (FileNotFoundError, ValueError, ClipError) as err:
        teardown_distributed()
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    teardown_distributed()
    if not dist_info.is_main:
        return
    typer.echo(
        f"encoded {report.encoded} clips ({report.already_done} already cached), "
        f"skipped {len(report.skipped)}"
    )
    for clip, reason in report.skipped:
        typer.echo(f"  skipped {clip}: {reason}")


from lpm.cli.prep import prep as _prep  # noqa: E402

app.command("prep")(_prep)
