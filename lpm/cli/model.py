"""`lpm model ...`: facts about a model config."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

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
    resolution: list[str] = typer.Option(
        None,
        "--resolution",
        help="HEIGHTxWIDTH in pixels, 480p or 720p (repeatable; default 480p and 720p).",
    ),
    as_json: bool = typer.Option(False, "--json", help="End with one JSON object on stdout."),
) -> None:
    """Parameters (meta-device build), tokens and FLOPs per 1-s chunk, KV-cache bytes."""
    from lpm.models.dit.info import model_report, parse_resolution

    try:
        cfg = get_model_config(config)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--config") from None
    try:
        sizes = dict(parse_resolution(r) for r in resolution) if resolution else None
        report = model_report(cfg, sizes)
    except ValueError as err:
        raise typer.BadParameter(str(err), param_hint="--resolution") from None
    table = Table(title=f"{cfg.name}: {cfg.num_layers} layers, dim {cfg.dim}, {cfg.attention}")
    table.add_column("quantity")
    table.add_column("value", justify="right")
    table.add_row("parameters", f"{report['params']:,} ({_human(report['params'])})")
    table.add_row("weights, bf16", _human(float(report["weights_bf16_bytes"]), "B"))
    table.add_row(
        "training state (fp32 weights, grads, AdamW, EMA; FSDP2 splits it)",
        _human(float(report["training_state_bytes"]), "B"),
    )
    for label in sizes or ("480p", "720p"):
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
        if f"streaming_bytes_{label}" in report:
            table.add_row(
                f"stream: backbone + refiner in bf16 with their caches @{label}",
                _human(float(report[f"streaming_bytes_{label}"]), "B"),
            )
    Console().print(table)
    if as_json:
        print(json.dumps(report))


@app.command()
def pack(
    vae: Path = typer.Option(..., help="`lpm train-vae` output (vae/ + light_decoder/)."),
    out: Path = typer.Option(..., help="Bundle directory to write."),
    checkpoint: Path = typer.Option(
        None, help="Training run or checkpoint (EMA preferred); none: a fresh transformer."
    ),
    encoders: Path = typer.Option(
        None, help="Bundle whose text/audio encoders to reuse (the one that encoded the data)."
    ),
    name: str = typer.Option("lpm-nano", help="Name recorded in bundle.json."),
    config: str = typer.Option("lpm-nano", help="Config of a fresh transformer."),
    size: int = typer.Option(64, help="Frame height and width in pixels."),
    segment_latents: int = typer.Option(12, help="Latent frames per offline segment."),
    steps: int = typer.Option(20, help="Default denoising steps."),
    text_scale: float = typer.Option(
        2.0, help="Default text guidance scale (4 over-drives lpm-nano: docs/nano.md)."
    ),
    audio_scale: float = typer.Option(4.0, help="Default audio guidance scale."),
    cue_scale: float = typer.Option(
        0.0, help="Default guidance scale of timed text cues (0: with the text)."
    ),
    cue_min_sigma: float = typer.Option(
        0.0, help="Cue guidance only at noise levels at or above this (0: at every step)."
    ),
    context_sigma: float = typer.Option(
        0.0, help="Default noise level on a continuing segment's context latents."
    ),
    half: bool = typer.Option(True, "--half/--full", help="Store weights as fp16."),
    overwrite: bool = typer.Option(False, help="Replace an existing bundle."),
) -> None:
    """Assemble a model bundle from a trained VAE, a training run and encoders."""
    from lpm.inference.bundle import SamplingDefaults
    from lpm.inference.pack import PackSettings, pack_bundle

    try:
        settings = PackSettings(
            name=name, config=config, size=size, segment_latents=segment_latents,
            sampling=SamplingDefaults(steps=steps, text_scale=text_scale, audio_scale=audio_scale,
                                      context_sigma=context_sigma, cue_scale=cue_scale,
                                      cue_min_sigma=cue_min_sigma),
        )  # fmt: skip
        path = pack_bundle(settings, vae_dir=vae, out=out, checkpoint=checkpoint,
                           encoders=encoders, half=half, overwrite=overwrite)  # fmt: skip
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    size_mb = sum(f.stat().st_size for f in path.rglob("*") if f.is_file()) / 1e6
    typer.echo(f"wrote {path} ({size_mb:.1f} MB)")


@app.command()
def link(
    transformer: Path = typer.Option(
        ..., help="LPM checkpoint (`lpm convert wan` output) or training run (its EMA weights)."
    ),
    vae: Path = typer.Option(..., help="Wan2.1 VAE folder (diffusers layout, or a pipeline root)."),
    text_encoder: Path = typer.Option(..., help="umT5 folder with its tokenizer (or a pipeline)."),
    audio_encoder: Path = typer.Option(..., help="wav2vec2 folder."),
    out: Path = typer.Option(..., help="Bundle directory to write (only bundle.json)."),
    name: str = typer.Option("lpm-1.3b", help="Name recorded in bundle.json."),
    height: int = typer.Option(480, help="Frame height in pixels."),
    width: int = typer.Option(832, help="Frame width in pixels."),
    segment_latents: int = typer.Option(30, help="Latent frames per offline segment."),
    steps: int = typer.Option(40, help="Default denoising steps."),
    text_scale: float = typer.Option(5.0, help="Default text guidance scale."),
    audio_scale: float = typer.Option(4.0, help="Default audio guidance scale."),
    overwrite: bool = typer.Option(False, help="Replace an existing bundle.json."),
) -> None:
    """A real-scale bundle that points at the transformer and encoders where they are.

    Nothing is copied; the widths are checked against each other first (docs/training.md)."""
    from lpm.inference.bundle import SamplingDefaults
    from lpm.inference.pack import link_bundle

    try:
        path = link_bundle(
            out=out, transformer=transformer, vae=vae, text_encoder=text_encoder,
            audio_encoder=audio_encoder, name=name, height=height, width=width,
            segment_latents=segment_latents, overwrite=overwrite,
            sampling=SamplingDefaults(steps=steps, text_scale=text_scale, audio_scale=audio_scale),
        )  # fmt: skip
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"wrote {path / 'bundle.json'}")


@app.command("swap-decoder")
def swap_decoder(
    bundle: Path = typer.Option(..., help="Bundle whose VAE decoder to replace."),
    vae: Path = typer.Option(..., help="`lpm train-vae` output trained with freeze_encoder."),
    out: Path = typer.Option(..., help="Bundle directory to write."),
    half: bool = typer.Option(True, "--half/--full", help="Store weights as fp16."),
    overwrite: bool = typer.Option(False, help="Replace an existing bundle."),
) -> None:
    """Give a bundle a new VAE decoder (e.g. one that reads speech) over the same encoder.

    The transformer keeps working only if the latents do not change, so the new VAE's encoder
    and latent statistics must equal the bundle's.
    """
    import torch

    from lpm.inference.bundle import ModelBundle
    from lpm.models.vae import load_vae

    try:
        model = ModelBundle.load(bundle)
        new = load_vae(vae)
        old_enc = {k: v for k, v in model.vae.state_dict().items() if k.startswith("encoder.")}
        new_enc = {k: v for k, v in new.state_dict().items() if k.startswith("encoder.")}
        same = old_enc.keys() == new_enc.keys() and all(
            torch.allclose(old_enc[k], new_enc[k], atol=1e-3, rtol=1e-3) for k in old_enc
        )
        same = same and torch.allclose(model.vae.latents_mean, new.latents_mean, atol=1e-4)
        same = same and torch.allclose(model.vae.latents_std, new.latents_std, atol=1e-4)
        if not same:
            raise ValueError(
                f"{vae} encodes differently from {bundle}'s VAE: train it with "
                f"--set init={bundle}/vae --set freeze_encoder=true"
            )
        model.vae = new
        path = model.save(out, overwrite=overwrite, half=half)
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"wrote {path} (decoder from {vae})")


@app.command("pack-online")
def pack_online(
    base: Path = typer.Option(..., help="The Base LPM bundle the students were distilled from."),
    backbone: Path = typer.Option(..., help="Distilled backbone: stage-3 run or checkpoint."),
    refiner: Path = typer.Option(
        None, help="Distilled refiner: stage-4 run or checkpoint (none: backbone only)."
    ),
    out: Path = typer.Option(..., help="Online bundle directory to write."),
    name: str = typer.Option("lpm-nano-online", help="Name recorded in bundle.json."),
    rank: int = typer.Option(
        32, help="Rank of each matrix's stored delta from the base (0: whole, no truncation)."
    ),
    refiner_timestep: float = typer.Option(
        None, help="T2 the stream re-noises to before the refiner (default: the run's)."
    ),
    history_sigma: float = typer.Option(
        None, help="Noise level of the backbone's history cache (default: the run's)."
    ),
    cue_scale: float = typer.Option(
        None, help="Guidance of timed cues in the backbone (1: none; default: the bundle's or 1)."
    ),
    cue_min_sigma: float = typer.Option(
        None, help="Cue guidance only on backbone steps at noise levels at or above this."
    ),
    cue_actions_only: bool = typer.Option(
        None,
        "--cue-actions-only/--cue-all",
        help="Guide only the cues that name an action (default: the bundle's, else all).",
    ),
    overwrite: bool = typer.Option(False, help="Replace an existing bundle."),
) -> None:
    """Assemble an Online LPM bundle: backbone + refiner as low-rank deltas from BASE, sharing
    BASE's VAE and encoders; the online timesteps come from the refiner (else backbone) run's
    recipe.json, or from the online bundle the two come from (re-packing at another rank)."""
    from lpm.inference.chunk_step import OnlineSchedule
    from lpm.inference.pack import pack_online_bundle

    schedule = OnlineSchedule()
    source = refiner or backbone
    recipe, bundle = source / "recipe.json", source.parent / "bundle.json"
    if recipe.is_file():
        data = json.loads(recipe.read_text())
        schedule = OnlineSchedule(
            backbone_timesteps=tuple(data["backbone_timesteps"]),
            refiner_timestep=data["refiner_timestep"],
            history_sigma=data["history_sigma"],
        )
    elif bundle.is_file() and json.loads(bundle.read_text()).get("online"):
        data = json.loads(bundle.read_text())["online"]
        schedule = OnlineSchedule(
            **{**data, "backbone_timesteps": tuple(data["backbone_timesteps"])}
        )
    overrides = {"refiner_timestep": refiner_timestep, "history_sigma": history_sigma,
                 "cue_scale": cue_scale, "cue_min_sigma": cue_min_sigma,
                 "cue_actions_only": cue_actions_only}  # fmt: skip
    try:
        schedule = dataclasses.replace(
            schedule, **{k: v for k, v in overrides.items() if v is not None}
        )
        reports = pack_online_bundle(base, backbone=backbone, refiner=refiner, out=out,
                                     schedule=schedule, name=name, rank=rank,
                                     overwrite=overwrite)  # fmt: skip
    except (FileNotFoundError, FileExistsError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    for role, report in reports.items():
        typer.echo(
            f"{role}: {report['low_rank']} low-rank + {report['full']} full deltas, "
            f"{report['unchanged']} unchanged, {100 * report['kept']:.1f}% of the change kept, "
            f"{report['bytes'] / 1e6:.2f} MB"
        )
    size_mb = sum(f.stat().st_size for f in out.rglob("*") if f.is_file()) / 1e6
    typer.echo(f"wrote {out} ({size_mb:.1f} MB; encoders shared with {base})")
