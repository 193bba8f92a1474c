"""Stage 6, captions and semantic checks.

Input: a clip's per-frame label fields and speech mask. Output: dense captions (consecutive
`dense_frames` windows) and sentence captions (segments bounded by speech on/offsets), in the
Stage caption format (`start_frame, end_frame, text, state, speaker`), and one of six semantic
classes. Both the captioner and the verifier are pluggable: `SemanticConfig.captioner` /
`verifier` may name `module:callable` of a local model; the rule-based defaults below read the
labels and tags only. Listener captions keep only time-invariant traits (no speech content).
"""

from __future__ import annotations

import importlib
from collections import Counter

import numpy as np

from lpm.data.prep.config import SemanticConfig

CLASSES = ("Conversation", "Listen_dialogue", "Listen_nondialogue", "Silence", "Speak", "Unknown")
"""The six semantic classes of the paper's verifier."""

_VERB = {"speak": "speaks", "listen": "listens", "idle": "stays quiet"}


def _load(spec: str):
    mod, _, fn = spec.partition(":")
    if not fn:
        raise ValueError(f"expected 'rule' or 'module:callable', got {spec!r}")
    return getattr(importlib.import_module(mod), fn)


def rule_verifier(fields: dict, speech: np.ndarray, audio_rms_db: float) -> str:
    """One of `CLASSES` from the label fractions (and whether non-speech sound is present)."""
    states = fields["state"]
    n = max(1, len(states))
    frac = {s: states.count(s) / n for s in ("speak", "listen", "idle")}
    if frac["speak"] >= 0.15 and frac["listen"] >= 0.15:
        return "Conversation"
    if frac["speak"] >= 0.5:
        return "Speak"
    if frac["listen"] >= 0.5:
        return "Listen_dialogue"
    if frac["idle"] >= 0.5:
        # silence by the VAD but loud: music or noise the person reacts to
        return "Listen_nondialogue" if audio_rms_db > -30.0 else "Silence"
    return "Unknown"


def _describe(fields: dict, a: int, b: int, traits: str) -> tuple[str, str]:
    states = fields["state"][a:b]
    state = Counter(states).most_common(1)[0][0]
    expr = Counter(fields["expression"][a:b]).most_common(1)[0][0]
    yaw = float(np.mean(fields["head_yaw"][a:b]))
    turn = " turned to the right" if yaw > 20 else " turned to the left" if yaw < -20 else ""
    mood = "" if expr == "neutral" else f", looking {expr}"
    return f"{traits} {_VERB[state]}{turn}{mood}.", state


def rule_captions(fields: dict, speech: np.ndarray, cfg: SemanticConfig, traits: str):
    """(dense, sentences) caption lists for one clip."""
    n = len(fields["state"])
    dense = []
    for a in range(0, n, cfg.dense_frames):
        b = min(n, a + cfg.dense_frames)
        text, state = _describe(fields, a, b, traits)
        dense.append(
            {"start_frame": a, "end_frame": b, "text": text, "state": state, "speaker": -1}
        )
    sentences = []
    edges = np.r_[0, np.nonzero(np.diff(speech.astype(np.int8)))[0] + 1, n]
    for a, b in zip(edges[:-1], edges[1:], strict=True):
        if b <= a:
            continue
        text, state = _describe(fields, int(a), int(b), traits)
        speaker = -1 if not speech[a] else 0 if state == "speak" else 1
        sentences.append(
            {
                "start_frame": int(a),
                "end_frame": int(b),
                "text": text,
                "state": state,
                "speaker": speaker,
            }
        )
    return dense, sentences


def caption_and_verify(
    fields: dict, speech: np.ndarray, audio_rms_db: float, traits: str, cfg: SemanticConfig
) -> tuple[list, list, str]:
    """(dense captions, sentence captions, semantic class) with the configured backends."""
    if cfg.captioner == "rule":
        dense, sentences = rule_captions(fields, speech, cfg, traits)
    else:
        dense, sentences = _load(cfg.captioner)(fields, speech, cfg.dense_frames)
    if cfg.verifier == "rule":
        cls = rule_verifier(fields, speech, audio_rms_db)
    else:
        cls = str(_load(cfg.verifier)(fields, speech))
    if cls not in CLASSES:
        raise ValueError(f"semantic verifier returned {cls!r}, not one of {CLASSES}")
    return dense, sentences, cls
