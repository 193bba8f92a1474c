"""Does a Base LPM read the action words of its prompt? Where action prompts are lost.

On an `lpm data encode` cache of Stage clips (and the clips it was made from, whose captions and
labels say which action each clip shows), for clips that show one action: the model's
flow-matching error at fixed noise levels with

- ``own``: the clip's caption, as in training;
- ``swapped``: the same caption with its action sentence replaced by another action's;
- ``none``: the text condition dropped (as classifier-free guidance drops it).

Errors are plain and motion-weighted (moving positions count more). A model that follows action
prompts denoises a clip better with its own action than with another (``swapped - own`` > 0),
above all at high noise, where the motion of the clip is still to be decided.

    python benchmarks/text_use.py [--model BUNDLE_OR_RUN] [--cache runs/nano-cache]
                                  [--clips runs/stage64] [--encoders BUNDLE] [--limit 48]

The last stdout line is one JSON object.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import torch

SIGMAS = (0.5, 0.7, 0.9)
MODES = ("own", "swapped", "none")


def action_clips(cache: Path, clips: Path, limit: int) -> list[tuple[int, str, str]]:
    """(cache index, caption, swapped caption) of up to ``limit`` clips showing exactly one
    action, whose caption ends with the sentence naming it."""
    from lpm.data.stage.captions import ACTION_PHRASES

    lines = (cache / "index.jsonl").read_text().splitlines()
    out = []
    rng = np.random.default_rng(0)
    names = sorted(ACTION_PHRASES)
    for i, line in enumerate(lines):
        e = json.loads(line)
        d = clips / e["clip"]
        if not (d / "labels.json").is_file():
            raise FileNotFoundError(f"{d}/labels.json is missing: --clips must be the encoded data")
        acts = {a for a in json.loads((d / "labels.json").read_text())["fields"]["action"]}
        acts.discard("none")
        caption = json.loads((d / "captions.json").read_text())["dense"][0]["text"]
        head, sep, tail = caption.rpartition(" It ")
        if len(acts) != 1 or not sep:
            continue
        (act,) = acts
        other = names[(names.index(act) + 1 + int(rng.integers(len(names) - 1))) % len(names)]
        swapped = f"{head} It {ACTION_PHRASES[other][0]}."
        out.append((i, caption, swapped))
        if len(out) == limit:
            break
    if len(out) < 2:
        raise ValueError(f"{cache} holds fewer than 2 clips showing one action")
    return out


@torch.no_grad()
def denoising_errors(model, text_encoder, cache: Path, clips: Path, limit: int, seed: int = 0):
    """({sigma: {mode: (plain MSE, motion-weighted MSE)}}, clips used) over up to ``limit``
    action clips."""
    from audio_use import variant_errors

    chosen = action_clips(cache, clips, limit)
    swapped = {i: c for i, _, c in chosen}

    def swap(kw, part):
        feats, mask = text_encoder.encode([swapped[i] for i in part])
        return dict(kw, text=feats.float(), text_mask=mask)

    none = lambda kw, _: dict(kw, drop_text=torch.ones_like(kw["drop_text"]))  # noqa: E731
    variants = {"own": lambda kw, _: kw, "swapped": swap, "none": none}
    # stage 1: speak and listen audio, the first frame given
    errors = variant_errors(model, cache, [i for i, _, _ in chosen], variants, sigmas=SIGMAS,
                            stage=1, seed=seed)  # fmt: skip
    return errors, len(chosen)


def main() -> None:
    from audio_use import base_parser, load_model, print_errors

    parser = base_parser(__doc__, 48, "action clips")
    parser.add_argument(
        "--encoders", type=Path, default=None,
        help="bundle whose text encoder encoded the cache (default: shipped lpm-nano)",
    )  # fmt: skip
    args = parser.parse_args()
    from lpm.inference import shipped_bundle_path
    from lpm.inference.bundle import load_encoders

    source, model = load_model(args.model)
    text_encoder = load_encoders(args.encoders or shipped_bundle_path())[2]
    errors, n = denoising_errors(model, text_encoder, args.cache, args.clips, args.limit)
    title = f"denoising error of {source} on {n} action clips (plain / motion-weighted)"
    print_errors(errors, MODES, title)
    print(json.dumps({"benchmark": "text_use", "model": source, "clips": n,
                      "errors": {str(k): v for k, v in errors.items()}}))  # fmt: skip


if __name__ == "__main__":
    main()
