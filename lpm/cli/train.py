"""`lpm train`: train Base LPM from a named recipe, on one process or under torchrun."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from lpm.train.recipes import RECIPES, apply_overrides, get_recipe

log = logging.getLogger("lpm.train")


def train(
    recipe: str = typer.Option("nano-base", help=f"Recipe: {', '.join(sorted(RECIPES))}."),
    overrides: list[str] = typer.Option(
        [], "--set", help="Override a field: key=value, model.<field>=v, stages.<stage>.<field>=v."
    ),
    out: Path | None = typer.Option(None, help="Run directory (default: runs/<recipe>)."),
    resume: bool = typer.Option(False, help="Continue from the run directory's latest checkpoint."),
    device: str | None = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
    progress: bool = typer.Option(True, help="Show a progress bar on rank 0."),
    show: bool = typer.Option(False, "--show", help="Print the resolved recipe as JSON and exit."),
) -> None:
    """Train with a recipe. Run as is for one process, or under `torchrun` for FSDP2."""
    try:
        resolved = apply_overrides(get_recipe(recipe), overrides)
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None
    if show:
        typer.echo(resolved.to_json())
        return
    from lpm.parallel import init_distributed, teardown_distributed
    from lpm.train.trainer import Trainer

    try:
        dist_info = init_distributed(device)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--device") from None
    logging.basicConfig(
        level=logging.INFO if dist_info.is_main else logging.WARNING,
        format=f"%(asctime)s [rank {dist_info.rank}] %(name)s: %(message)s",
    )
    run_dir = out if out is not None else Path("runs") / resolved.name
    try:
        trainer = Trainer(resolved, run_dir, dist_info=dist_info, resume=resume, progress=progress)
        result = trainer.fit()
    except (ValueError, FileNotFoundError) as err:  # a bad value, or a missing init/data path
        teardown_distributed()
        raise typer.BadParameter(str(err)) from None
    teardown_distributed()
    if dist_info.is_main:
        summary = {
            "steps": result.steps,
            "final_loss": result.final_loss,
            "steps_per_s": result.steps_per_s,
            "checkpoint": str(result.checkpoint),
        }
        log.info("done: %s", json.dumps(summary))
