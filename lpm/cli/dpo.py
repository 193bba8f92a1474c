"""`lpm dpo`: Diffusion-DPO post-training of Base LPM on Pareto-preferred candidates.

lpm dpo candidates [--model BUNDLE] [--suite stage-dpo] [--limit 8] [--candidates 4] --out DIR
lpm dpo pairs --candidates DIR [--recipe nano-dpo] [--set k=v]
lpm dpo train --candidates DIR [--recipe nano-dpo] [--init BUNDLE] [--set k=v] [--out RUN]
lpm dpo eval --run RUN --candidates DIR [--draws 4]
lpm dpo pack --run RUN [--base BUNDLE] --out BUNDLE
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import typer

from lpm.train.dpo.recipe import RECIPES, apply_overrides, get_recipe

log = logging.getLogger("lpm.dpo")

app = typer.Typer(
    help="DPO post-training of Base LPM on Pareto-preferred candidates.", no_args_is_help=True
)

_RECIPE = typer.Option("nano-dpo", help=f"Recipe: {', '.join(sorted(RECIPES))}.")
_SET = typer.Option([], "--set", help="Override a recipe field: key=value.")
_CANDIDATES = typer.Option(None, help="Directory written by `lpm dpo candidates`.")


def _resolve(recipe: str, overrides: list[str], candidates: Path | None, init: str | None = None):
    sets = [f"{k}={v}" for k, v in (("candidates", candidates), ("init", init)) if v is not None]
    try:
        return apply_overrides(get_recipe(recipe), [*overrides, *sets])
    except ValueError as err:
        raise typer.BadParameter(str(err)) from None


def _logging(main: bool = True, rank: int = 0) -> None:
    logging.basicConfig(
        level=logging.INFO if main else logging.WARNING,
        format=f"%(asctime)s [rank {rank}] %(name)s: %(message)s",
    )


@app.command("candidates")
def candidates(
    out: Path = typer.Option(..., help="Candidates directory (re-run to resume or add)."),
    model: str = typer.Option("", help="Bundle to post-train (default: the shipped lpm-nano)."),
    suite: str = typer.Option("stage-dpo", help="Suite whose cases are the conditions."),
    start: int = typer.Option(0, help="Index of the suite's first case used."),
    limit: int = typer.Option(8, help="Conditions: N cases of the suite from --start (0: all)."),
    count: int = typer.Option(4, "--candidates", help="Candidates per condition (>= 2)."),
    steps: int | None = typer.Option(None, help="Denoising steps (default: the bundle's)."),
    seed: int = typer.Option(0, help="Candidate k is sampled with seed SEED + k."),
    save_videos: bool = typer.Option(False, help="Also write every candidate as mp4."),
    device: str = typer.Option(
        "auto", help="Where the model generates: auto (a GPU when there is one), cpu, cuda."
    ),
    progress: bool = typer.Option(True, help="Show a progress bar."),
) -> None:
    """Generate K candidates per condition and score each per dimension with the probes."""
    from lpm.train.dpo.candidates import CandidateSettings, generate_candidates

    _logging()
    try:
        settings = CandidateSettings(
            model=model, suite=suite, start=start, limit=limit, candidates=count, steps=steps,
            seed=seed, save_videos=save_videos, device=device, progress=progress,
        )  # fmt: skip
        summary = generate_candidates(settings, out)
    except (ValueError, FileNotFoundError) as err:
        raise typer.BadParameter(str(err)) from None
    typer.echo(json.dumps({"out": str(summary.out), "conditions": summary.conditions,
                           "new": summary.new, "candidates": summary.candidates,
                           "seconds": round(summary.seconds, 1)}))  # fmt: skip


@app.command("pairs")
def pairs(
    candidates: Path = typer.Option(..., help="Directory written by `lpm dpo candidates`."),
    recipe: str = _RECIPE,
    overrides: list[str] = _SET,
) -> None:
    """Count the Pareto-preferred pairs a recipe selects (per subset and in all)."""
    from lpm.train.dpo.data import CandidateSet
    from lpm.train.dpo.trainer import select_run_pairs

    resolved = _resolve(recipe, overrides, candidates)
    try:
        found = CandidateSet(candidates)
        selected = select_run_pairs(found, resolved)
    except (ValueError, FileNotFoundError) as err:
        raise typer.BadParameter(str(err)) from None
    per_subset: dict[str, int] = {}
    for p in selected:
        subset = found.records[p.condition].subset
        per_subset[subset] = per_subset.get(subset, 0) + 1
    k = found.spec.candidates
    typer.echo(json.dumps({
        "conditions": len(found), "candidates": found.num_candidates,
        "ordered_pairs_possible": len(found) * k * (k - 1),
        "conditions_with_pairs": len({p.condition for p in selected}),
        "pairs": len(selected), "per_subset": per_subset,
        "dimensions": list(resolved.dimensions), "tie_tolerance": resolved.tie_tolerance,
        "margin": resolved.margin,
    }))  # fmt: skip


@app.command("train")
def train(
    candidates: Path | None = _CANDIDATES,
    recipe: str = _RECIPE,
    overrides: list[str] = _SET,
    init: str | None = typer.Option(
        None, help="Start model (bundle/checkpoint/run); default: the candidates' bundle."
    ),
    out: Path | None = typer.Option(None, help="Run directory (default: runs/<recipe>)."),
    resume: bool = typer.Option(False, help="Continue from the run directory's latest checkpoint."),
    device: str | None = typer.Option(None, help="cpu or cuda (default: cuda when available)."),
    progress: bool = typer.Option(True, help="Show a progress bar on rank 0."),
    show: bool = typer.Option(False, "--show", help="Print the resolved recipe as JSON and exit."),
) -> None:
    """Post-train with Diffusion-DPO (run as is, or under `torchrun` for FSDP2)."""
    resolved = _resolve(recipe, overrides, candidates, init)
    if show:
        typer.echo(resolved.to_json())
        return
    if resolved.candidates and not Path(resolved.candidates).is_dir():
        raise typer.BadParameter(
            f"candidates directory {resolved.candidates} does not exist; make it with "
            f"`lpm dpo candidates --out {resolved.candidates}`"
        )
    from lpm.parallel import init_distributed, teardown_distributed
    from lpm.train.dpo.trainer import DPOTrainer

    try:
        dist_info = init_distributed(device)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--device") from None
    _logging(dist_info.is_main, dist_info.rank)
    run_dir = out if out is not None else Path("runs") / resolved.name
    try:
        trainer = DPOTrainer(resolved, run_dir, dist_info=dist_info, resume=resume,
                             progress=progress)  # fmt: skip
        result = trainer.fit()
    except (ValueError, FileNotFoundError) as err:
        teardown_distributed()
        raise typer.BadParameter(str(err)) from None
    teardown_distributed()
    if dist_info.is_main:
        summary = {"steps": result.steps, "final_loss": result.final_loss,
                   "steps_per_s": result.steps_per_s, "pairs": len(trainer.pairs),
                   "checkpoint": str(result.checkpoint)}  # fmt: skip
        log.info("done: %s", json.dumps(summary))


@app.command("pack")
def pack(
    run: Path = typer.Option(..., help="A DPO run directory or checkpoint (EMA preferred)."),
    out: Path = typer.Option(..., help="Bundle directory to write."),
    base: str = typer.Option("", help="Bundle to take the rest from (default: shipped lpm-nano)."),
    name: str = typer.Option("", help="Bundle name (default: <base name>-dpo)."),
    overwrite: bool = typer.Option(False, help="Replace an existing bundle at --out."),
) -> None:
    """Write a bundle: the base bundle with its transformer replaced by the post-trained one."""
    from lpm.inference import shipped_bundle_path
    from lpm.inference.pack import pack_finetuned

    try:
        path = pack_finetuned(base or shipped_bundle_path(), checkpoint=run, out=out,
                              name=name or None, overwrite=overwrite)  # fmt: skip
    except (ValueError, FileNotFoundError, FileExistsError) as err:
        raise typer.BadParameter(str(err)) from None
    typer.echo(str(path))


@app.command("eval")
def evaluate(
    run: Path = typer.Option(..., help="A DPO run directory."),
    candidates: Path = typer.Option(..., help="Candidates to evaluate on (e.g. unseen cases)."),
    draws: int = typer.Option(4, help="Noise draws per pair."),
    device: str = typer.Option("auto", help="auto (a GPU when there is one), cpu or cuda."),
) -> None:
    """Implicit reward accuracy of a run's policy vs its reference on another set's pairs."""
    import dataclasses

    from lpm.train.dpo.evaluate import evaluate_run

    try:
        result = evaluate_run(run, candidates, draws=draws, device=device)
    except (ValueError, FileNotFoundError) as err:
        raise typer.BadParameter(str(err)) from None
    typer.echo(json.dumps(dataclasses.asdict(result)))
