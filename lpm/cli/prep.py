"""`lpm data prep`: turn raw footage into clips in the Stage clip schema."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer


def prep(
    input: Path = typer.Option(
        ..., "--input", help="Folder of videos, a manifest.jsonl, or a video."
    ),
    out: Path = typer.Option(..., "--out", help="Output directory (an existing one is resumed)."),
    config: Path | None = typer.Option(None, "--config", help="JSON file of PrepConfig sections."),
    detector: str | None = typer.Option(
        None, "--detector", help="Face backend: mediapipe, dlib or stage (Stage renders)."
    ),
    vad: str | None = typer.Option(None, "--vad", help="Voice activity: silero or energy."),
    until: str | None = typer.Option(None, "--until", help="Stop after this operator."),
    workers: int = typer.Option(1, "--workers", help="Processes of the local runner."),
    runner: str = typer.Option("local", "--runner", help="local or ray."),
    ray_address: str | None = typer.Option(None, "--ray-address", help="Existing Ray cluster."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Progress bars."),
) -> None:
    """Clean raw footage: shots, filters, tracks, speak/listen/idle labels, audio variants,
    captions, references; writes clips, manifest.jsonl and a funnel table."""
    from lpm.data.prep.config import PrepConfig

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        d = json.loads(config.read_text()) if config else {}
        if detector:
            d.setdefault("detect", {})["backend"] = detector
        if vad:
            d.setdefault("labels", {})["vad"] = vad
        if until:
            d["until"] = until
        cfg = PrepConfig.from_dict(d)
        if runner == "ray":
            from lpm.data.prep.ray_runner import run_ray

            summary = run_ray(input, out, cfg, num_cpus=workers, address=ray_address)
        elif runner == "local":
            from lpm.data.prep.runner import run_local

            summary = run_local(input, out, cfg, workers=workers, progress=progress)
        else:
            raise ValueError(f"--runner must be local or ray, got {runner!r}")
    except (ValueError, FileNotFoundError, ImportError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from err
    from lpm.data.prep.runner import funnel_markdown

    typer.echo(funnel_markdown(summary["funnel"]))
    for s in summary["skipped"]:
        typer.echo(f"skipped {s['path']}: {s['reason']}")
    for e in summary["errors"]:
        typer.echo(f"error {e['path']}: {e['reason']} (retried on the next run)")
    typer.echo(f"{summary['clips']} clips in {out}")
