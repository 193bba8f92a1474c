"""What knowing the action is worth to a denoiser of Stage latents.

Two small 3-D convolution networks predict a clip's clean latents from its first latent frame
(and each frame's position); the second is also given each latent frame's labelled action (the
share of its 4 video frames per action). The drop in held-out error between them is how much a
model that reads its action words *could* gain in the flow-matching loss, to set against how
much a DiT gains (``benchmarks/text_use.py``): a large gap means the loss rewards following
actions and the DiT has not learnt it.

    python benchmarks/action_value.py [--cache runs/nano-cache] [--clips runs/stage64]
                                      [--steps 1200] [--heldout 300]

Needs an `lpm data encode` cache and the Stage clips it was made from (their labels). About
6 min on 2 CPU cores. The last stdout line is one JSON object.
"""

from __future__ import annotations

import argparse
import json
import math
import time
from pathlib import Path

import torch
from safetensors import safe_open
from torch import nn

from lpm.data.stage.schema import ACTIONS


def load(cache: Path, clips: Path) -> tuple[torch.Tensor, torch.Tensor]:
    """Latents (N, C, F, h, w) and per-latent-frame action shares (N, len(ACTIONS), F) of the
    cache's clips with its most common length F."""
    index = cache / "index.jsonl"
    if not index.is_file():
        raise SystemExit(f"{cache} is not an encode cache (no index.jsonl); run `lpm data encode`")
    entries = [json.loads(ln) for ln in index.read_text().splitlines() if ln.strip()]
    frames = max({e["frames"] for e in entries}, key=[e["frames"] for e in entries].count)
    handles, latents, actions = {}, [], []
    for e in entries:
        if e["frames"] != frames:
            continue
        labels = clips / e["clip"] / "labels.json"
        if not labels.is_file():
            raise SystemExit(f"{labels} is missing: --clips must be the data of the cache")
        shard = handles.setdefault(
            e["shard"], safe_open(str(cache / "shards" / e["shard"]), framework="pt")
        )
        latents.append(shard.get_tensor(f"{e['key']}.latents").float())
        per_frame = json.loads(labels.read_text())["fields"]["action"]
        share = torch.zeros(len(ACTIONS), frames)
        for f in range(frames):
            for name in per_frame[4 * f : 4 * f + 4]:
                share[ACTIONS.index(name), f] += 0.25
        actions.append(share)
    return torch.stack(latents), torch.stack(actions)


class Predictor(nn.Module):
    """Clean latents from the first latent frame, a learned per-frame position and, optionally,
    the action shares; the output is a residual on the first frame repeated."""

    def __init__(self, channels: int, frames: int, *, with_actions: bool, width: int = 96):
        super().__init__()
        self.with_actions = with_actions
        extra = len(ACTIONS) if with_actions else 0
        self.position = nn.Parameter(torch.zeros(1, channels, frames, 1, 1))
        self.net = nn.Sequential(
            nn.Conv3d(2 * channels + extra, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv3d(width, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv3d(width, width, 3, padding=1),
            nn.SiLU(),
            nn.Conv3d(width, channels, 3, padding=1),
        )

    def forward(self, latents: torch.Tensor, actions: torch.Tensor) -> torch.Tensor:
        b, _, f, h, w = latents.shape
        first = latents[:, :, :1].expand_as(latents)
        parts = [first, self.position.expand(b, -1, -1, h, w)]
        if self.with_actions:
            parts.append(actions[..., None, None].expand(-1, -1, -1, h, w))
        return first + self.net(torch.cat(parts, dim=1))


def fit(latents, actions, train, *, with_actions: bool, steps: int, seed: int) -> Predictor:
    torch.manual_seed(seed)
    model = Predictor(latents.shape[1], latents.shape[2], with_actions=with_actions)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    g = torch.Generator().manual_seed(seed)
    for step in range(steps):
        for group in opt.param_groups:
            group["lr"] = 1e-3 * 0.5 * (1 + math.cos(math.pi * step / steps))
        i = train[torch.randint(len(train), (16,), generator=g)]
        loss = ((model(latents[i], actions[i]) - latents[i]) ** 2).mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model.eval()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, default=Path("runs/nano-cache"))
    parser.add_argument("--clips", type=Path, default=Path("runs/stage64"))
    parser.add_argument("--steps", type=int, default=1200)
    parser.add_argument("--heldout", type=int, default=300)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    torch.set_num_threads(2)
    t0 = time.time()
    latents, actions = load(args.cache, args.clips)
    if len(latents) <= args.heldout:
        raise SystemExit(f"{len(latents)} clips: need more than --heldout {args.heldout}")
    perm = torch.randperm(len(latents), generator=torch.Generator().manual_seed(args.seed))
    held, train = perm[: args.heldout], perm[args.heldout :]
    with_action = actions[held, 1:].sum(dim=(1, 2)) > 2  # ~2 latent frames or more of action
    rows = {}
    with torch.no_grad():
        copy = ((latents[held][:, :, :1] - latents[held]) ** 2).mean(dim=(1, 2, 3, 4))
    rows["first frame repeated"] = copy
    for name, use in (("first frame", False), ("first frame + actions", True)):
        model = fit(latents, actions, train, with_actions=use, steps=args.steps, seed=args.seed)
        with torch.no_grad():
            pred = model(latents[held], actions[held])
            rows[name] = ((pred - latents[held]) ** 2).mean(dim=(1, 2, 3, 4))
    print(f"held-out error of clean-latent predictors ({len(held)} clips, {len(train)} trained on)")
    print(f"{'predictor':<24}{'all clips':>12}{'clips with an action':>24}")
    for name, err in rows.items():
        print(f"{name:<24}{float(err.mean()):>12.4f}{float(err[with_action].mean()):>24.4f}")
    base, full = rows["first frame"], rows["first frame + actions"]
    gain_all = 1 - float(full.mean()) / float(base.mean())
    gain_act = 1 - float(full[with_action].mean()) / float(base[with_action].mean())
    print(f"knowing the action lowers the error by {gain_all:.1%} ({gain_act:.1%} on action clips)")
    print(json.dumps({
        "benchmark": "action_value", "clips": len(latents), "heldout": len(held),
        "action_clips": int(with_action.sum()), "steps": args.steps,
        "error": {k: [float(v.mean()), float(v[with_action].mean())] for k, v in rows.items()},
        "gain": gain_all, "gain_action_clips": gain_act, "seconds": round(time.time() - t0, 1),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
