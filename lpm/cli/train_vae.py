"""`lpm train-vae`: the nano video VAE and its light streaming decoder, trained on Stage clips."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import typer


def train_vae(
    out: Path = typer.Option(..., "--out", help="Output directory (vae/, light_decoder/, card)."),
    set_: list[str] = typer.Option([], "--set", help="Recipe field override KEY=VALUE."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Train the tiny Wan VAE, measure its latent statistics, distil the light decoder."""
    from tqdm import tqdm

    from lpm.device import resolve_device
    from lpm.train.vae import VaeRecipe, run_vae_recipe

    fields = {f.name: f for f in dataclasses.fields(VaeRecipe)}
    values = {}
    for item in set_:
        key, sep, raw = item.partition("=")
        if not sep or key not in fields:
            raise typer.BadParameter(f"{item!r}: use KEY=VALUE with KEY in {sorted(fields)}")
        try:
            values[key] = json.loads(raw)
        except json.JSONDecodeError:
            if fields[key].type not in (str, "str"):
                raise typer.BadParameter(f"{item!r}: {raw!r} is not a number") from None
            values[key] = raw  # a path or a name
    try:
        recipe = VaeRecipe(**values)
        resolve_device(recipe.device)
    except (TypeError, ValueError) as err:
        raise typer.BadParameter(str(err)) from None
    total = recipe.vae_steps
    if recipe.kind == "wan":
        total += recipe.image_steps + recipe.decoder_steps
    bar = tqdm(total=total, disable=not progress, unit="step")
    out.mkdir(parents=True, exist_ok=True)
    log_path = out / "metrics.jsonl"
    seen = 0

    def tick(_done: int, _total: int, metrics: dict) -> None:
        nonlocal seen
        seen += 1
        bar.update(1)
        bar.set_postfix({k: f"{v:.4f}" for k, v in metrics.items()})
        with log_path.open("a") as fh:  # one line per step: the loss parts of that step
            fh.write(json.dumps({"step": seen, **metrics}) + "\n")

    metrics = run_vae_recipe(recipe, out, tick)
    bar.close()
    typer.echo(json.dumps(metrics))
