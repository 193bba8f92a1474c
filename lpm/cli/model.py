"""`lpm model ...`: facts about a model config."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from lpm.config import MODEL_CONFIGS, get_model_config

app = typer.Typer(help="Inspect model configs: parameters, tokens, FLOPs.", no_args_is_help=True)


def _human(value: float, unit: str = "") -> str:
    for scale, suffix in ((1e15, "P"), (1e12, "T"), (1e9, "G"), (1e6, "M"), (1e3, "k")):
        if abs(value) >= scale:
            return f"{value / scale:.2f} {suffix}{unit}"
    return f"{value:.0f} {unit}"


@app.command()
def info(
    config: str = typer.Option(
        "lpm-nano", help=f"Model config: {', '.join(sorted(MODEL_CONFIGS))}."
    ),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON object on stdout."),
) -> None:
    """Parameters (meta-device build), tokens and FLOPs per 1-s chunk, KV-cache bytes."""
    from lpm.models.dit.info import model_report

    try:
        cfg = get_model_config(config)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--config") from None
    report = model_report(cfg)
    table = Table(title=f"{cfg.name}: {cfg.num_layers} layers, dim {cfg.dim}, {cfg.attention}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("parameters", f"{report['params']:,} ({_human(report['params'])})")
    for label in ("480p", "720p"):
        table.add_row(f"tokens / latent frame @{label}", f"{report[f'tokens_per_frame_{label}']:,}")
        table.add_row(f"tokens / 1-s chunk @{label}", f"{report[f'tokens_per_chunk_{label}']:,}")
        table.add_row(
            f"FLOPs / chunk forward @{label}",
            _human(float(report[f"flops_per_chunk_{label}"]), "FLOP"),
        )
        table.add_row(
            f"FLOPs / online chunk @{label}",
            _human(float(report[f"flops_per_online_chunk_{label}"]), "FLOP"),
        )
        table.add_row(
            f"KV cache (sink {cfg.sink_chunks} + window {cfg.window_chunks}, bf16) @{label}",
            _human(float(report[f"kv_cache_bytes_{label}"]), "B"),
        )
    Console().print(table)
    if as_json:
        print(json.dumps(report))
