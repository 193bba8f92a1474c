"""Stage 8, listener rebalancing: tag listening clips neutral or expressive, resample to a mix.

Input: manifest entries with `tags` (emotion, energy_db, motion; see `write.clip_tags`).
Output: a sampling list (entries, repeated or dropped) where the listening clips reach the
target fraction of expressive ones: neutral clips are down-sampled and expressive ones
up-sampled (DESIGN §5); other clips pass through once.
"""

from __future__ import annotations

import numpy as np

from lpm.data.prep.config import RebalanceConfig


def is_listening(entry: dict) -> bool:
    return entry.get("state_fraction", {}).get("listen", 0.0) >= 0.5


def expressive(entry: dict, motion_med: float, emotion_med: float) -> bool:
    """Above the listening clips' median motion or mouth/emotion variation."""
    tags = entry.get("tags", {})
    return tags.get("motion", 0.0) > motion_med or tags.get("emotion", 0.0) > emotion_med


def rebalance(entries: list[dict], cfg: RebalanceConfig) -> list[dict]:
    """The resampled list; each kept entry gains `tag` (`neutral`/`expressive`/`other`)."""
    listen = [e for e in entries if is_listening(e)]
    out = [dict(e, tag="other") for e in entries if not is_listening(e)]
    if not listen:
        return out
    motion_med = float(np.median([e.get("tags", {}).get("motion", 0.0) for e in listen]))
    emotion_med = float(np.median([e.get("tags", {}).get("emotion", 0.0) for e in listen]))
    exp = [dict(e, tag="expressive") for e in listen if expressive(e, motion_med, emotion_med)]
    neu = [dict(e, tag="neutral") for e in listen if not expressive(e, motion_med, emotion_med)]
    rng = np.random.default_rng(cfg.seed)
    n = len(listen)
    want_exp = round(cfg.target_expressive * n)
    if exp and want_exp:
        out += [exp[i] for i in rng.choice(len(exp), want_exp, replace=want_exp > len(exp))]
    if neu and n - want_exp:
        k = n - want_exp
        out += [neu[i] for i in rng.choice(len(neu), k, replace=k > len(neu))]
    return out
