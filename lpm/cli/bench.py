"""`lpm bench ...`: the benchmark's automatic probes (training and checks)."""

from __future__ import annotations

from pathlib import Path

import typer

app = typer.Typer(help="LPM-Bench: automatic probes and metrics.", no_args_is_help=True)


@app.command("train-probes")
def train_probes_cmd(
    out: Path = typer.Option(..., "--out", help="Output directory for weights, card, metrics."),
    steps: int = typer.Option(
        None, "--steps", help="Frame-probe optimiser steps (default: ProbeTrainConfig.steps)."
    ),
    seed: int = typer.Option(0, "--seed", help="Seed of identities, states, augmentation, init."),
    sets: list[str] = typer.Option(
        None,
        "--set",
        help="Override a ProbeTrainConfig field, key=value (repeatable), e.g. "
        "--set init_from=DIR --set train_branches=face --set train_ids=10000.",
    ),
    probe_sets: list[str] = typer.Option(
        None,
        "--probe-set",
        help="Override a ProbeConfig (network geometry) field, key=value, e.g. "
        "--probe-set action_hidden=80.",
    ),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress bars."),
) -> None:
    """Train the Stage probes (frames of training identities) and evaluate on held-out ones."""
    from lpm.bench.probes import ProbeConfig, ProbeTrainConfig, train_probes
    from lpm.train.recipes import override_fields

    try:
        cfg = override_fields(ProbeTrainConfig(), sets or [])
        pcfg = override_fields(ProbeConfig(), probe_sets or [], flag="--probe-set")
        result = train_probes(
            out, steps=steps, seed=seed, config=cfg, probe_config=pcfg, progress=progress
        )
    except ValueError as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from err
    clean = result.card["metrics"]["heldout_frames"]["clean"]
    actions = result.card["metrics"]["heldout_performances"]["clean"]
    typer.echo(
        f"held-out: mouth R2 {clean['mouth_r2']:.3f}, expression {clean['expression_acc']:.3f}, "
        f"identity EER {clean['identity_eer']:.3f}, blink {clean['blink_acc']:.3f}, "
        f"action {actions['action_acc']:.3f}; {result.seconds:.0f} s -> {result.weights}"
    )


def _fail(err: Exception) -> typer.Exit:
    typer.echo(f"error: {err}", err=True)
    return typer.Exit(code=2)


@app.command("suite")
def suite_cmd(
    name: str = typer.Argument(..., help="stage-1000, stage-mini, or a suite file/directory."),
    duration_scale: float = typer.Option(1.0, "--duration-scale", help="Scale durations."),
    out: Path = typer.Option(None, "--out", help="Write the suite's cases to this JSON file."),
) -> None:
    """Show a suite's composition (and optionally write its case specs)."""
    import json

    import numpy as np

    from lpm.bench.suites import load_suite

    try:
        suite = load_suite(name, duration_scale=duration_scale)
    except (ValueError, FileNotFoundError) as err:
        raise _fail(err) from err
    d = np.array([c.duration_s for c in suite.cases])
    typer.echo(f"{suite.name}: {len(suite.cases)} cases {suite.composition()}")
    typer.echo(
        f"durations: median {np.median(d):.1f} s, min {d.min():.1f} s, max {d.max():.1f} s,"
        f" total {d.sum() / 3600:.2f} h"
    )
    if out is not None:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(suite.to_dict(), indent=1) + "\n")
        typer.echo(f"wrote {out}")


def _backend(
    kind: str, probes: Path | None, arcface: Path | None, i3d: Path | None, syncnet: Path | None
):
    from lpm.bench.backends import FeatureExtractor, IdentityEmbedder, RealFaceBackend, StageBackend

    if kind == "stage":
        given = [
            f for f, v in (("--arcface", arcface), ("--i3d", i3d), ("--syncnet", syncnet)) if v
        ]
        if given:
            raise ValueError(
                f"{', '.join(given)} read real faces: add --backend real (the Stage probes "
                "read identity, features and the mouth themselves)"
            )
        from lpm.bench.probes import load_probes

        return StageBackend(load_probes(probes))
    if kind == "real":
        scorer = None
        if syncnet:
            from lpm.bench.avsync import SyncNetScorer
            from lpm.bench.nets.syncnet import load_syncnet

            scorer = SyncNetScorer(load_syncnet(syncnet))
        return RealFaceBackend(
            identity=IdentityEmbedder(arcface) if arcface else None,
            features=FeatureExtractor(i3d) if i3d else None,
            syncnet=scorer,
        )
    raise ValueError(f"--backend must be stage or real, got {kind!r}")


@app.command("weights")
def weights_cmd(
    kind: str = typer.Argument(..., help="syncnet, arcface or i3d."),
    path: Path = typer.Argument(..., help="Released weight file (.pth/.model/.safetensors)."),
    to: Path = typer.Option(
        None, "--to", help="Also write the checked tensors here as safetensors (released names)."
    ),
) -> None:
    """Check a released weight file against its architecture; optionally convert it."""
    import importlib

    import torch

    from lpm.bench.backends import load_network

    try:
        net = load_network(path, kind)
        scripted = isinstance(net, torch.jit.ScriptModule)
        if to is not None:
            if scripted:
                raise ValueError(f"{path} is TorchScript: only state dicts convert to safetensors")
            from safetensors.torch import save_file

            from lpm.bench.nets.checkpoint import released_state

            module = importlib.import_module(f"lpm.bench.nets.{kind}")
            to.parent.mkdir(parents=True, exist_ok=True)
            save_file(released_state(net, module.released_key), str(to))
    except (ValueError, FileNotFoundError) as err:
        raise _fail(err) from err
    n = sum(p.numel() for p in net.parameters())
    what = "TorchScript" if scripted else f"{type(net).__name__} {net.config}"
    typer.echo(f"{path}: {what}, {n / 1e6:.2f} M parameters")
    if to is not None:
        typer.echo(f"wrote {to}")


@app.command("run")
def run_cmd(
    suite: str = typer.Option(..., "--suite", help="stage-mini, stage-1000 or a suite file."),
    out: Path = typer.Option(..., "--out", help="Run directory (resumable, several systems)."),
    model: Path = typer.Option(None, "--model", help="Bundle directory (default: lpm-nano)."),
    videos: Path = typer.Option(None, "--videos", help="Score <case id>.mp4 files from here."),
    name: str = typer.Option("", "--name", help="System name (default: the directory name)."),
    online: bool = typer.Option(False, "--online", help="Generate with the streaming engine."),
    duration_scale: float = typer.Option(1.0, "--duration-scale", help="Scale durations."),
    limit: int = typer.Option(0, "--limit", help="Only the first N cases (0: all)."),
    seed: int = typer.Option(0, "--seed", help="Generation seed."),
    steps: int = typer.Option(None, "--steps", help="Denoising steps (default: the bundle's)."),
    device: str = typer.Option(
        "auto",
        "--device",
        help="Where the model generates: auto (a GPU when there is one), cpu, cuda.",
    ),
    truth: bool = typer.Option(True, "--truth/--no-truth", help="Also score the ground truth."),
    backend: str = typer.Option("stage", "--backend", help="Metric backend: stage or real."),
    probes: Path = typer.Option(None, "--probes", help="Probe weights (default: shipped)."),
    arcface: Path = typer.Option(
        None, "--arcface", help="ArcFace IResNet backbone.pth / .safetensors / TorchScript (real)."
    ),
    i3d: Path = typer.Option(
        None, "--i3d", help="I3D rgb_imagenet.pt / .safetensors / TorchScript (real backend)."
    ),
    syncnet: Path = typer.Option(
        None, "--syncnet", help="SyncNet syncnet_v2.model / .safetensors (real backend)."
    ),
    report: bool = typer.Option(True, "--report/--no-report", help="Write the report after."),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show a progress bar."),
) -> None:
    """Generate every case with a model (or take --videos) and score it; then write the report."""
    from lpm.bench.report import write_report
    from lpm.bench.runner import RunConfig, run_suite

    try:
        if model is None and videos is None and not online:
            from lpm.inference import shipped_bundle_path

            model = shipped_bundle_path()
        cfg = RunConfig(
            suite=suite,
            out=out,
            model=model,
            videos=videos,
            system=name,
            online=online,
            duration_scale=duration_scale,
            limit=limit,
            seed=seed,
            steps=steps,
            device=device,
            with_truth=truth,
            progress=progress,
        )
        summary = run_suite(cfg, backend=_backend(backend, probes, arcface, i3d, syncnet))
    except (ValueError, FileNotFoundError, ImportError) as err:
        raise _fail(err) from err
    typer.echo(
        f"{summary.suite}: {summary.cases} cases, systems {summary.systems}, "
        f"{summary.seconds:.0f} s" + (f"; missing {summary.missing}" if summary.missing else "")
    )
    if report:
        html, metrics = write_report(out)
        typer.echo(f"report: {html}\nmetrics: {metrics}")


@app.command("report")
def report_cmd(
    out: Path = typer.Option(..., "--out", help="Run directory written by `lpm bench run`."),
    human: Path = typer.Option(None, "--human", help="Ratings export (`lpm bench rate`)."),
    screenshot: Path = typer.Option(None, "--screenshot", help="Also save a PNG screenshot."),
) -> None:
    """Write metrics.json and report.html for a run directory."""
    import json

    from lpm.bench.report import write_report

    try:
        data = json.loads(human.read_text())["aggregate"] if human else None
        html, metrics = write_report(out, data)
        typer.echo(f"report: {html}\nmetrics: {metrics}")
        if screenshot is not None:
            from lpm.bench.browser import screenshot_page

            typer.echo(f"screenshot: {screenshot_page(html, screenshot)}")
    except (ValueError, FileNotFoundError, KeyError, ImportError) as err:
        raise _fail(err) from err


@app.command("rate")
def rate_cmd(
    out: Path = typer.Option(..., "--out", help="Run directory holding both systems' videos."),
    a: str = typer.Option(None, "--a", help="System A (pairs are created from the run)."),
    b: str = typer.Option(None, "--b", help="System B."),
    db: Path = typer.Option(None, "--db", help="Study database (default OUT/ratings.sqlite)."),
    port: int = typer.Option(8765, "--port", help="Port on 127.0.0.1."),
    export: Path = typer.Option(None, "--export", help="Write ratings + aggregate JSON, exit."),
    serve: bool = typer.Option(True, "--serve/--no-serve", help="Serve the rating page."),
) -> None:
    """Run a human rating study (side-by-side pairs, 3 raters each) on 127.0.0.1."""
    import json

    from lpm.bench.rating import RatingStore, aggregate_ratings
    from lpm.bench.rating.app import HOST, make_pairs
    from lpm.bench.rating.app import serve as serve_app

    store = RatingStore(db or out / "ratings.sqlite")
    try:
        if a and b:
            added = store.add_pairs(make_pairs(out, a, b))
            typer.echo(f"{added} new pairs ({a} vs {b})")
        if export is not None:
            ratings = store.export()
            export.write_text(
                json.dumps({"ratings": ratings, "aggregate": aggregate_ratings(ratings)}, indent=1)
            )
            typer.echo(f"wrote {len(ratings)} ratings to {export}")
            return
        if serve:
            typer.echo(f"rating page: http://{HOST}:{port}/  (Ctrl-C to stop)")
            serve_app(store, port=port)
    except (ValueError, FileNotFoundError, ImportError) as err:
        raise _fail(err) from err
    finally:
        store.close()
