"""`lpm convert ...`: foreign checkpoints into LPM checkpoints (docs/convert.md)."""

from __future__ import annotations

import json
from pathlib import Path

import typer

app = typer.Typer(help="Convert foreign checkpoints into LPM checkpoints.", no_args_is_help=True)

#: --dtype choices -> torch dtype names (None keeps the source dtypes).
_DTYPES = {"keep": None, "fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


@app.command("wan")
def wan(
    src: Path = typer.Option(
        ...,
        "--src",
        help="Wan2.1 transformer: the original release directory, a diffusers pipeline or its "
        "transformer/ folder, or one .safetensors file.",
    ),
    out: Path = typer.Option(..., "--out", help="LPM checkpoint directory to create."),
    config: str = typer.Option(
        "auto",
        "--config",
        help="Target config: auto, lpm-17b, lpm-1.3b, any registered name, or a ModelConfig JSON.",
    ),
    dtype: str = typer.Option("keep", "--dtype", help=f"Stored dtype: {', '.join(_DTYPES)}."),
    seed: int = typer.Option(0, "--seed", help="Seed of the fresh audio-module initialisation."),
    overwrite: bool = typer.Option(False, "--overwrite", help="Replace an existing --out."),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON object on stdout."),
) -> None:
    """Convert Wan2.1 T2V/I2V transformer weights into an LPM checkpoint (audio modules fresh)."""
    import torch
    from rich.console import Console
    from rich.progress import MofNCompleteColumn, TextColumn

    from lpm.cli.progress import StepBar
    from lpm.models.dit.state_dict_adapter import convert_wan_checkpoint

    if dtype not in _DTYPES:
        raise typer.BadParameter(f"{dtype!r} is not one of {', '.join(_DTYPES)}", "--dtype")
    torch_dtype = None if _DTYPES[dtype] is None else getattr(torch, _DTYPES[dtype])
    console = Console(stderr=True)
    columns = (MofNCompleteColumn(), TextColumn("{task.description}"))
    with StepBar("reading shards", "shards", columns=columns, console=console) as bar:
        try:
            report = convert_wan_checkpoint(
                src, out, config=config, dtype=torch_dtype, seed=seed,
                overwrite=overwrite, progress=bar,
            )  # fmt: skip
        except (ValueError, FileNotFoundError, FileExistsError) as err:
            console.print(f"[red]error:[/red] {err}", soft_wrap=True)
            raise typer.Exit(code=1) from None
    cfg = report.config
    reduced = (
        "; patch embedding cut from 36 to 16 input channels" if report.reduced_in_channels else ""
    )
    console.print(
        f"wrote {out}: {cfg.name} ({cfg.num_layers} layers, dim {cfg.dim}) from the "
        f"{report.layout} layout; {report.converted} tensors converted, {report.fresh} audio "
        f"tensors fresh, {len(report.dropped)} image-branch tensors dropped{reduced}"
    )
    if as_json:
        print(json.dumps({**report.to_dict(), "dropped": len(report.dropped), "out": str(out)}))
