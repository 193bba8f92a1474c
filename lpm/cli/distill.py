"""`lpm distill`: distil Base LPM into the Online LPM backbone and refiner, stage by stage.

lpm distill trajectories --recipe NAME [--teacher DIR] [--out DIR]    (once, for stages 1-2)
lpm distill --recipe NAME --stage 1..4 [--set k=v] [--out DIR] [--resume]
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from lpm.distill.recipes import RECIPES, STAGES, apply_overrides, get_recipe

log = logging.getLogger("lpm.distill")

app = typer.Typer(
    help="Distil Base LPM into Online LPM (backbone + refiner) in four stages.",
    invoke_without_command=True,
    no_args_is_help=False,
)

_RECIPE = typer.Option("nano-online", help=f"Recipe: {', '.join(sorted(RECIPES))}.")
_SET = typer.Option([], "--set", help="Override a recipe field: key=value or model.<field>=v.")


def _resolve(recipe: str, overrides: list[str], **fields: object):
    sets = [f"{k}={v}" for k, v in fields.items() if v is not None]
    try:
        return apply_overrides(get_recipe(recipe), [*overrides, *sets])
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


@app.callback()
def distill(
    ctx: typer.Context,
    recipe: str = _RECIPE,
    stage: int | None = typer.Option(
        None, help="Stage: 1 ode, 2 offpolicy, 3 onpolicy, 4 refiner."
    ),
    overrides: list[str] = _SET,
    out: Path | None = typer.Option(
        None, help="Run directory (default runs/<recipe>/stage<N>-<name>)."
    ),
    resume: bool = typer.Option(False, help="Continue from the run directory's latest checkpoint."),
    device: str | None = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
    progress: bool = typer.Option(True, help="Show a progress bar on rank 0."),
    show: bool = typer.Option(False, "--show", help="Print the resolved recipe as JSON and exit."),
) -> None:
    """Train one distillation stage (run as is, or under `torchrun` for FSDP2)."""
    if ctx.invoked_subcommand is not None:
        return
    if stage is None and not show:
        raise typer.BadParameter(
            f"give --stage ({', '.join(f'{k} {v}' for k, v in STAGES.items())})"
        )
    resolved = _resolve(recipe, overrides, stage=stage)
    if show:
        typer.echo(resolved.to_json())
        return
    from lpm.distill.trainer import DistillTrainer
    from lpm.parallel import init_distributed, teardown_distributed

    try:
        dist_info = init_distributed(device)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--device") from None
    _logging(dist_info.is_main, dist_info.rank)
    run_dir = out or Path("runs") / resolved.name / f"stage{resolved.stage}-{resolved.stage_name}"
    try:
        trainer = DistillTrainer(
            resolved, run_dir, dist_info=dist_info, resume=resume, progress=progress
        )
        result = trainer.fit()
    except (ValueError, FileNotFoundError) as err:
        teardown_distributed()
        raise typer.BadParameter(str(err)) from None
    teardown_distributed()
    if dist_info.is_main:
        summary = {"stage": resolved.stage, "steps": result.steps,
                   "final_loss": result.final_loss, "steps_per_s": result.steps_per_s,
                   "checkpoint": str(result.checkpoint)}  # fmt: skip
        log.info("done: %s", json.dumps(summary))


@app.command("trajectories")
def trajectories(
    recipe: str = _RECIPE,
    overrides: list[str] = _SET,
    teacher: str | None = typer.Option(None, help="Base LPM bundle or checkpoint directory."),
    out: Path = typer.Option(..., help="Directory of the trajectory cache."),
    count: int | None = typer.Option(None, help="Clips to generate (default: the whole dataset)."),
    shard_size: int = typer.Option(64, help="Clips per safetensors shard."),
    overwrite: bool = typer.Option(False, help="Replace a cache made with other settings."),
    device: str = typer.Option(
        "auto", help="auto (a GPU when there is one), cpu or cuda (under torchrun: one per rank)."
    ),
) -> None:
    """Generate the guided teacher's trajectories at {T0, T1, T2, 0}; re-run to resume.

    Under torchrun each rank generates its share of the shards."""

    from lpm.distill.models import load_teacher
    from lpm.distill.trainer import build_dataset
    from lpm.distill.trajectories import generate_trajectories
    from lpm.parallel import barrier, init_distributed, teardown_distributed

    resolved = _resolve(recipe, overrides, teacher=teacher)
    try:
        dist_info = init_distributed(device)  # under torchrun: one GPU per rank
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--device") from None
    _logging(dist_info.is_main, dist_info.rank)
    try:
        resolved.require_teacher()
        model = load_teacher(
            resolved.teacher, resolved.model_config(), seed=resolved.seed, device=dist_info.device
        )  # fmt: skip
        spec = generate_trajectories(
            resolved, model, build_dataset(resolved), out, count=count, shard_size=shard_size,
            overwrite=overwrite, device=dist_info.device, rank=dist_info.rank,
            world_size=dist_info.world_size,
            on_shard=lambda done, total: log.info("shard %d/%d", done, total),
        )  # fmt: skip
        barrier()  # every rank's shards are written
    except (ValueError, FileNotFoundError) as err:
        teardown_distributed()
        raise typer.BadParameter(str(err)) from None
    teardown_distributed()
    if dist_info.is_main:
        summary = {"out": str(out), "clips": spec.count, "sigmas": spec.sigmas}
        log.info("done: %s", json.dumps(summary))


def _logging(main: bool, rank: int) -> None:
    logging.basicConfig(
        level=logging.INFO if main else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s",
    )
