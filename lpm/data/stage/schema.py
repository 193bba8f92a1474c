"""Vocabulary, identity splits and the versioned on-disk schema of the Stage world.

Everything a consumer of Stage data needs to decode a clip lives here: the label vocabularies
(states, expressions, actions, views), the identity seed split, file names inside a clip
directory and the schema version written into every clip and manifest line. `docs/stage.md`
describes the same schema in prose.
"""

from __future__ import annotations

from dataclasses import dataclass

SCHEMA_VERSION = "stage-1.0"
"""Written as `schema` into every `meta.json`, `labels.json` and manifest line."""

DEFAULT_FPS = 24
"""Video frame rate (frames per second)."""

DEFAULT_SAMPLE_RATE = 16_000
"""Audio sample rate of every track (Hz)."""

STATES: tuple[str, ...] = ("speak", "listen", "idle")
"""Per-frame performer state: speaking (own speech), listening (partner speech), idle (silence)."""

EXPRESSIONS: tuple[str, ...] = (
    "neutral",
    "happy",
    "sad",
    "angry",
    "surprised",
    "disgusted",
    "fearful",
    "thinking",
)
"""The 8 expression classes; the label is an index into this tuple."""

ACTIONS: tuple[str, ...] = (
    "none",
    "nod",
    "shake_head",
    "turn_left",
    "turn_right",
    "look_up",
    "lean_in",
    "raise_eyebrows",
    "wave",
)
"""Text-triggered actions; index 0 (`none`) means no action is running."""

VIEWS: tuple[str, ...] = ("front", "left", "right", "back")
"""Body facing relative to the camera; `left` shows the character's left profile."""

# Identity seeds: one integer per character. The held-out range is never drawn for training.
TRAIN_SEEDS = range(0, 90_000)
"""Identity seeds used by training splits."""

HELDOUT_SEEDS = range(90_000, 100_000)
"""Identity seeds reserved for evaluation (never used for training)."""

SPLITS: tuple[str, ...] = ("train", "heldout")


def split_of(identity_seed: int) -> str:
    """Return the split (`"train"` or `"heldout"`) that an identity seed belongs to.

    Raises:
        ValueError: the seed is outside both ranges.
    """
    if identity_seed in TRAIN_SEEDS:
        return "train"
    if identity_seed in HELDOUT_SEEDS:
        return "heldout"
    raise ValueError(
        f"identity seed {identity_seed} is outside the Stage identity ranges "
        f"[{TRAIN_SEEDS.start}, {HELDOUT_SEEDS.stop}); pick a seed in TRAIN_SEEDS or HELDOUT_SEEDS"
    )


def seeds_of(split: str) -> range:
    """Return the identity seed range of a split name (`"train"` or `"heldout"`)."""
    if split == "train":
        return TRAIN_SEEDS
    if split == "heldout":
        return HELDOUT_SEEDS
    raise ValueError(f"split must be one of {SPLITS}, got {split!r}")


@dataclass(frozen=True, kw_only=True)
class ClipFiles:
    """File names inside one clip directory (relative to the clip directory)."""

    video: str = "video.mp4"
    """H.264 video with the AAC mix of both speakers."""
    speak: str = "speak.wav"
    """The performer's own speech only (mono, 16-bit PCM)."""
    listen: str = "listen.wav"
    """The partner's speech only (mono, 16-bit PCM)."""
    mix: str = "mix.wav"
    """Both speakers mixed (the same audio as in the mp4, lossless)."""
    labels: str = "labels.json"
    """Per-frame labels, one array per field."""
    captions: str = "captions.json"
    """Dense captions per fixed-length window and per sentence segment."""
    meta: str = "meta.json"
    """Clip metadata: identities, split, timing, speech backend, script."""
    refs_dir: str = "refs"
    """Reference images (PNG): global_*.png, view_{front,left,right,back}.png, expr_{name}.png."""


CLIP_FILES = ClipFiles()

MANIFEST_NAME = "manifest.jsonl"
"""One JSON object per completed clip, appended only after the clip directory is complete."""

DATASET_CONFIG_NAME = "dataset.json"
"""The resolved build configuration of a dataset directory (checked when a run resumes)."""
