"""Does a Base LPM hear its speech audio? Where a model that does not lip-sync loses the mouth.

Two measurements on an `lpm data encode` cache of Stage clips (and the Stage clips it was made
from, whose labels hold the true mouth opening of every frame):

1. **Denoising error by audio.** For speaking clips, the model's flow-matching error at fixed
   noise levels with the clip's own speak audio, with no audio (the guidance-dropped
   condition) and with another clip's speak audio, plain and motion-weighted (the mouth counts
   more). A model that uses the audio for the mouth denoises better with its own audio than
   with another clip's.
2. **Where the mouth signal is.** Ridge regressions, fitted on 80% of the clips and scored on
   the rest (correlation): the audio features of a ±4-frame window → the frame's true mouth
   opening, and a latent frame (its deviation from the clip mean) → the mean mouth opening of
   its 4 frames. The first bounds what the audio tells; the second how plainly the latents
   hold the mouth.

    python benchmarks/audio_use.py [--model BUNDLE_OR_RUN] [--cache runs/nano-cache]
                                   [--clips runs/stage64] [--limit 32]

The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import torch

SIGMAS = (0.3, 0.5, 0.7, 0.9)
MODES = ("own", "none", "other")


@torch.no_grad()
def variant_errors(model, cache: Path, clips: list[int], variants: dict, *, sigmas, stage: int,
                   seed: int = 0) -> dict:  # fmt: skip
    """{sigma: {variant: (plain MSE, motion-weighted MSE)}} of ``model`` on the cache entries
    ``clips`` (batches of 8) in curriculum stage ``stage`` of ``nano-base``. Each variant is a
    function (model kwargs with both conditions kept, entries of the batch) -> model kwargs."""
    from lpm.diffusion import add_noise, sigma_to_timestep
    from lpm.train.batch import collate
    from lpm.train.cache import CachedDataset
    from lpm.train.conditioning import build_problem, motion_weights
    from lpm.train.recipes import apply_overrides, get_recipe

    recipe = apply_overrides(get_recipe("nano-base"), [f"data_path={cache}"])
    data = CachedDataset(cache, frames=recipe.latent_shape[0], seed=seed)
    g = torch.Generator().manual_seed(seed)
    out = {}
    for sigma in sigmas:
        sums = {m: np.zeros(2) for m in variants}
        batches = 0
        for k in range(0, len(clips), 8):
            part = clips[k : k + 8]
            batch = collate([data[i] for i in part])
            problem = build_problem(batch, recipe, recipe.stages[stage], 0)
            x0 = problem.x0
            noise = torch.randn(x0.shape, generator=g)
            s = torch.full((x0.shape[0], x0.shape[2]), sigma)
            x_t = add_noise(x0, noise, s)
            weight = motion_weights(x0, 3.0)
            keep = torch.zeros(x0.shape[0], dtype=bool)
            kwargs = dict(problem.model_kwargs, drop_text=keep, drop_audio=keep)
            for mode, variant in variants.items():
                err = model(x_t, sigma_to_timestep(s), **variant(kwargs, part)) - (noise - x0)
                err = err.pow(2)
                sums[mode] += [err.mean().item(), (err * weight).mean().item()]
            batches += 1
        out[sigma] = {m: (sums[m] / batches).tolist() for m in variants}
    return out


def denoising_errors(model, cache: Path, limit: int, seed: int = 0) -> dict:
    """{sigma: {mode: (plain MSE, motion-weighted MSE)}} over ``limit`` speaking clips."""
    from lpm.train.cache import CachedDataset
    from lpm.train.recipes import get_recipe

    data = CachedDataset(cache, frames=get_recipe("nano-base").latent_shape[0], seed=seed)
    speaking = [i for i in range(len(data)) if data.category(i) == "speak"][:limit]
    if len(speaking) < 2:
        raise ValueError(f"{cache} holds fewer than 2 speaking clips")
    none = lambda kw, _: dict(kw, drop_audio=torch.ones_like(kw["drop_audio"]))  # noqa: E731
    other = lambda kw, _: dict(kw, speak_audio=kw["speak_audio"].roll(1, 0))  # noqa: E731
    variants = {"own": lambda kw, _: kw, "none": none, "other": other}
    # stage 2: identity references, speak and listen audio; every clip hears its neighbour's
    # speech in "other"
    return variant_errors(model, cache, speaking, variants, sigmas=SIGMAS, stage=2, seed=seed)


def mouth_signal(cache: Path, clips: Path, alpha: float = 1.0) -> dict:
    """Held-out correlations of ridge fits: audio → mouth opening, latent → mouth opening."""
    from safetensors import safe_open
    from sklearn.linear_model import Ridge

    xa, ya, ga, xl, yl, gl = [], [], [], [], [], []
    handles = {}
    for n, line in enumerate((cache / "index.jsonl").read_text().splitlines()):
        e = json.loads(line)
        if e["category"] not in ("speak", "conversation"):
            continue
        labels = clips / e["clip"] / "labels.json"
        if not labels.is_file():
            raise FileNotFoundError(f"{labels} is missing: --clips must be the encoded data dir")
        mouth = np.asarray(json.loads(labels.read_text())["fields"]["mouth_open"], np.float32)
        shard = cache / "shards" / e["shard"]
        f = handles.setdefault(e["shard"], safe_open(str(shard), framework="pt"))
        lat = f.get_tensor(f"{e['key']}.latents").float().numpy()  # (C, F, h, w)
        audio = f.get_tensor(f"{e['key']}.speak_audio").float().numpy()  # (4F, D)
        n_lat, dim = lat.shape[1], audio.shape[1]
        for t in range(4, 4 * n_lat - 4):
            xa.append(audio[t - 4 : t + 5].mean(0) if dim % 4 else
                      audio[t - 4 : t + 5].reshape(9, 4, dim // 4).mean(1).ravel())  # fmt: skip
            ya.append(mouth[t])
            ga.append(n)
        dev = lat - lat.mean(1, keepdims=True)
        for j in range(1, n_lat):  # latent j holds frames 4j .. 4j + 3
            xl.append(dev[:, j].ravel())
            yl.append(mouth[4 * j : 4 * j + 4].mean())
            gl.append(n)

    def fit(x, y, groups) -> float:
        x, y, groups = np.asarray(x), np.asarray(y), np.asarray(groups)
        train = groups < np.quantile(groups, 0.8)
        pred = Ridge(alpha=alpha).fit(x[train], y[train]).predict(x[~train])
        return float(np.corrcoef(pred, y[~train])[0, 1])

    return {"audio_to_mouth": fit(xa, ya, ga), "latent_to_mouth": fit(xl, yl, gl),
            "frames": len(ya), "latent_frames": len(yl)}  # fmt: skip


def base_parser(doc: str, limit: int, what: str) -> argparse.ArgumentParser:
    """The arguments this benchmark and `text_use.py` share (``doc``: the script's docstring)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="bundle, checkpoint or run (default: shipped)"
    )
    parser.add_argument("--cache", type=Path, default=Path("runs/nano-cache"))
    parser.add_argument("--clips", type=Path, default=Path("runs/stage64"))
    parser.add_argument("--limit", type=int, default=limit, help=what)
    return parser


def load_model(source: str | None):
    """(source, fp32 eval model) of a bundle, checkpoint or run; None: the shipped lpm-nano."""
    from lpm.distill.models import resolve_checkpoint
    from lpm.inference import shipped_bundle_path
    from lpm.models.dit.checkpoint import load_lpm_checkpoint

    source = source or str(shipped_bundle_path())
    return source, load_lpm_checkpoint(resolve_checkpoint(source), dtype=torch.float32).eval()


def print_errors(errors: dict, modes: tuple[str, ...], title: str) -> None:
    """The error table and the motion-weighted gap of ``modes[1]`` over ``modes[0]``."""
    gap_mode = modes[1]
    print(title)
    print(f"{'sigma':>6}" + "".join(f"{m:>18}" for m in modes) + f"{gap_mode + ' - own':>16}")
    for sigma, row in errors.items():
        gap = row[gap_mode][1] - row[modes[0]][1]
        cells = "".join(f"{row[m][0]:>9.4f}{row[m][1]:>9.4f}" for m in modes)
        print(f"{sigma:>6}{cells}{gap:>16.4f}")


def main() -> None:
    args = base_parser(__doc__, 32, "speaking clips for part 1").parse_args()
    source, model = load_model(args.model)
    errors = denoising_errors(model, args.cache, args.limit)
    title = f"denoising error of {source} on {args.limit} speaking clips (plain / motion-weighted)"
    print_errors(errors, ("own", "other", "none"), title)
    signal = mouth_signal(args.cache, args.clips)
    print(
        f"held-out correlation with the true mouth opening: audio window "
        f"{signal['audio_to_mouth']:.3f}, latent frame {signal['latent_to_mouth']:.3f}"
    )
    print(json.dumps({"benchmark": "audio_use", "model": source, "clips": args.limit,
                      "errors": {str(k): v for k, v in errors.items()}, **signal}))  # fmt: skip


if __name__ == "__main__":
    main()
