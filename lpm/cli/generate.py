"""`lpm generate`: a character image + audio + timed prompts -> an mp4 with the audio muxed in."""

from __future__ import annotations

import logging
from pathlib import Path

import typer

from lpm.cli.progress import StepBar

log = logging.getLogger(__name__)


def _references(specs: list[str]):
    from lpm.inference import ReferenceImage
    from lpm.media import read_image

    refs = []
    for spec in specs:
        try:
            kind_sub, path = spec.split("=", 1)
            kind, _, sub = kind_sub.partition(":")
            refs.append(ReferenceImage(kind=kind, subtype=int(sub or 0), image=read_image(path)))
        except ValueError as err:
            raise typer.BadParameter(
                f"{spec!r}: {err}; write --ref KIND[:SUBTYPE]=IMAGE, e.g. --ref body:1=left.png",
                param_hint="--ref",
            ) from None
    return refs


def _where(bundle) -> str:
    """``cuda:0, bf16``: where a loaded bundle's transformer runs, and in what precision."""
    import torch

    weight = next(bundle.transformer.parameters())
    names = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}
    return f"{weight.device}, {names.get(weight.dtype, str(weight.dtype))}"


def _online(bundle_dir, image, speak, listen, segments, refs, seconds, seed, device, dtype):
    from lpm.inference import ModelBundle
    from lpm.inference.pipeline import fit_audio
    from lpm.inference.streaming import generate_online
    from lpm.media import read_image
    from lpm.models.audio import load_audio

    first = read_image(image)
    bundle = ModelBundle.load(bundle_dir, device=device, dtype=dtype)
    typer.echo(f"running on {_where(bundle)}")
    sr = bundle.spec.sample_rate
    waves = [load_audio(p, sr, allow_silent=True) if p else None for p in (speak, listen)]
    if seconds is not None:
        waves = [None if w is None else fit_audio(w, seconds, sr) for w in waves]
    else:
        lengths = [len(w) for w in waves if w is not None]
        if not lengths:
            raise ValueError("give speak or listen audio, or --seconds for a silent (idle) video")
        seconds = max(lengths) / sr
    with StepBar("streaming", "chunks") as bar:
        return generate_online(
            bundle,
            first,
            speak_audio=waves[0],
            listen_audio=waves[1],
            seconds=seconds,
            script=segments,
            references=refs,
            seed=seed,
            progress=bar,
        )


def generate(
    model: Path = typer.Option(
        None,
        help="Bundle directory; default: the shipped lpm-nano (lpm-nano-online with --online).",
    ),
    image: Path = typer.Option(None, help="Character image (first frame and global reference)."),
    speak: Path = typer.Option(None, help="The character's own speech (any sample rate)."),
    listen: Path = typer.Option(None, help="The partner's speech the character listens to."),
    script: Path = typer.Option(None, help="JSON/YAML list of {start, end, text} prompts (s)."),
    ref: list[str] = typer.Option([], help="Extra reference KIND[:SUBTYPE]=IMAGE (repeatable)."),
    seconds: float = typer.Option(None, help="Cut or loop the audio to this many seconds."),
    seed: int = typer.Option(0, help="Random seed."),
    steps: int = typer.Option(None, help="Denoising steps per segment (bundle default)."),
    text_scale: float = typer.Option(None, help="Text guidance scale (bundle default)."),
    audio_scale: float = typer.Option(None, help="Audio guidance scale (bundle default)."),
    cue_scale: float = typer.Option(
        None, help="Guidance scale of timed instructions (bundle default; 0: with the text)."
    ),
    cue_min_sigma: float = typer.Option(
        None, help="Guide timed instructions only at noise levels at or above this (bundle's)."
    ),
    solver: str = typer.Option(None, help="unipc or euler (bundle default)."),
    context_sigma: float = typer.Option(
        None, help="Noise level on a continuing segment's context latents (bundle default)."
    ),
    out: Path = typer.Option(Path("lpm.mp4"), help="Output mp4 (H.264 + AAC)."),
    device: str = typer.Option(
        "auto", help="Torch device: auto (a GPU when there is one), cpu, cuda or cuda:N."
    ),
    dtype: str = typer.Option(
        "auto", help="Transformer precision: auto (bf16 on a GPU, fp32 on the CPU), fp32, bf16."
    ),
    online: bool = typer.Option(False, "--online", help="Stream with the distilled online model."),
) -> None:
    """Generate a video offline (Base LPM). With no model named, the shipped lpm-nano is used;
    with no inputs at all, the shipped demo (a held-out character speaking and listening)."""
    from lpm.inference import Pipeline, load_script, shipped_bundle_path
    from lpm.media import check_mp4_path, read_image

    try:
        bundle_dir = model or shipped_bundle_path("lpm-nano-online" if online else "lpm-nano")
        if image is None and speak is None and listen is None and script is None:
            from lpm.inference.demo import demo_inputs

            demo = demo_inputs()
            image, speak, listen, script = demo.image, demo.speak, demo.listen, demo.script
            typer.echo(f"no inputs given: generating the shipped demo ({demo.image.parent})")
        if image is None:
            raise typer.BadParameter("give --image CHARACTER.png", param_hint="--image")
        check_mp4_path(out)
        segments = load_script(script) if script else []
        if online:
            video = _online(bundle_dir, image, speak, listen, segments, _references(ref), seconds,
                            seed, device, dtype)  # fmt: skip
            path = video.save(out)
            typer.echo(f"wrote {path} ({len(video.frames)} frames, online)")
            return
        first, refs = read_image(image), _references(ref)
        pipe = Pipeline.from_pretrained(bundle_dir, device=device, dtype=dtype)
        typer.echo(f"running on {_where(pipe.bundle)}")
        with StepBar("generating", "steps") as bar:
            video = pipe.generate(
                first,
                speak_audio=speak,
                listen_audio=listen,
                script=segments,
                references=refs,
                seconds=seconds,
                seed=seed,
                steps=steps,
                text_scale=text_scale,
                audio_scale=audio_scale,
                cue_scale=cue_scale,
                cue_min_sigma=cue_min_sigma,
                solver=solver,
                context_sigma=context_sigma,
                progress=bar,
            )
        path = video.save(out)
    except (FileNotFoundError, ValueError) as err:
        typer.echo(f"error: {err}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(f"wrote {path} ({len(video.frames)} frames, {len(video.frames) / video.fps:.1f} s)")
