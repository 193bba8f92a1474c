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
def denoising_errors(model, cache: Path, limit: int, seed: int = 0) -> dict:
    """{sigma: {mode: (plain MSE, motion-weighted MSE)}} over ``limit`` speaking clips."""
    from lpm.diffusion import add_noise, sigma_to_timestep
    from lpm.train.batch import collate
    from lpm.train.cache import CachedDataset
    from lpm.train.conditioning import build_problem, motion_weights
    from lpm.train.recipes import apply_overrides, get_recipe

    recipe = apply_overrides(get_recipe("nano-base"), [f"data_path={cache}"])
    stage = recipe.stages[2]  # identity references, speak and listen audio
    frames = recipe.latent_shape[0]
    data = CachedDataset(cache, frames=frames, seed=seed)
    speaking = [i for i in range(len(data)) if data.category(i) == "speak"][:limit]
    if len(speaking) < 2:
        raise ValueError(f"{cache} holds fewer than 2 speaking clips")
    g = torch.Generator().manual_seed(seed)
    out = {}
    for sigma in SIGMAS:
        sums = {m: np.zeros(2) for m in MODES}
        batches = 0
        for k in range(0, len(speaking), 8):
            batch = collate([data[i] for i in speaking[k : k + 8]])
            problem = build_problem(batch, recipe, stage, 0)
            x0 = problem.x0
            noise = torch.randn(x0.shape, generator=g)
            s = torch.full((x0.shape[0], x0.shape[2]), sigma)
            x_t = add_noise(x0, noise, s)
            weight = motion_weights(x0, 3.0)
            kwargs = dict(problem.model_kwargs, drop_text=torch.zeros(x0.shape[0], dtype=bool))
            for mode in MODES:
                kw = dict(kwargs, drop_audio=torch.full((x0.shape[0],), mode == "none"))
                if mode == "other":  # every clip hears its neighbour's speech
                    kw["speak_audio"] = kwargs["speak_audio"].roll(1, 0)
                err = (model(x_t, sigma_to_timestep(s), **kw) - (noise - x0)).pow(2)
                sums[mode] += [err.mean().item(), (err * weight).mean().item()]
            batches += 1
        out[sigma] = {m: (sums[m] / batches).tolist() for m in MODES}
    return out


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--model", default=None, help="bundle, checkpoint or run (default: shipped)"
    )
    parser.add_argument("--cache", type=Path, default=Path("runs/nano-cache"))
    parser.add_argument("--clips", type=Path, default=Path("runs/stage64"))
    parser.add_argument("--limit", type=int, default=32, help="speaking clips for part 1")
    args = parser.parse_args()

    from lpm.distill.models import resolve_checkpoint
    from lpm.inference import shipped_bundle_path
    from lpm.models.dit.checkpoint import load_lpm_checkpoint

    source = args.model or str(shipped_bundle_path())
    model = load_lpm_checkpoint(resolve_checkpoint(source), dtype=torch.float32).eval()
    errors = denoising_errors(model, args.cache, args.limit)
    print(f"denoising error of {source} on {args.limit} speaking clips (plain / motion-weighted)")
    print(f"{'sigma':>6}" + "".join(f"{m:>18}" for m in MODES) + f"{'other - own':>16}")
    for sigma, row in errors.items():
        gap = row["other"][1] - row["own"][1]
        cells = "".join(f"{row[m][0]:>9.4f}{row[m][1]:>9.4f}" for m in MODES)
        print(f"{sigma:>6}{cells}{gap:>16.4f}")
    signal = mouth_signal(args.cache, args.clips)
    print(
        f"held-out correlation with the true mouth opening: audio window "
        f"{signal['audio_to_mouth']:.3f}, latent frame {signal['latent_to_mouth']:.3f}"
    )
    print(json.dumps({"benchmark": "audio_use", "model": source, "clips": args.limit,
                      "errors": {str(k): v for k, v in errors.items()}, **signal}))  # fmt: skip


if __name__ == "__main__":
    main()
