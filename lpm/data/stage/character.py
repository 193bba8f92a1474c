"""Procedural cartoon characters: one integer identity seed gives one character.

A `Character` holds every time-invariant trait: head and face geometry, colours, hairstyle,
clothing, accessories, background, voice and performance temperament. The same seed always gives
the same character; neighbouring seeds give unrelated ones. Colours are RGB tuples (0..255).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from lpm.data.stage.schema import HELDOUT_SEEDS, TRAIN_SEEDS, split_of

RGB = tuple[int, int, int]

HEAD_SHAPES = ("round", "oval", "square", "heart", "pear", "long")
HAIR_STYLES = (
    "bald",
    "buzz",
    "short",
    "side_part",
    "bob",
    "long",
    "spiky",
    "bun",
    "curly",
    "mohawk",
    "ponytail",
    "afro",
)
NOSE_KINDS = ("dot", "button", "triangle", "long", "round")
CLOTHING_PATTERNS = ("plain", "stripes", "dots", "collar", "vneck", "two_tone", "checker")
BACKGROUND_PATTERNS = ("plain", "gradient", "stripes", "dots", "window", "checker", "rays")
GLASSES = ("none", "round", "square")
HATS = ("none", "cap", "beanie", "headband", "bow")
FACIAL_HAIR = ("none", "mustache", "beard", "goatee")
LIP_LEAD_FRAMES = 1
"""Frames by which every character's mouth leads its speech. One lead for all, as in footage
whose audio and video the data pipeline has put in sync: a per-character lead that no input
shows cannot be learnt (docs/stage.md, "Lip lead")."""

_SKIN_TONES: tuple[RGB, ...] = (
    (255, 224, 196),
    (241, 194, 155),
    (224, 172, 132),
    (198, 134, 96),
    (160, 104, 70),
    (120, 76, 50),
    (86, 56, 40),
    (250, 210, 170),
    # cartoon tones
    (150, 210, 150),
    (150, 190, 240),
    (200, 170, 235),
    (250, 180, 190),
)
_HAIR_COLOURS: tuple[RGB, ...] = (
    (30, 24, 20),
    (70, 44, 26),
    (120, 74, 40),
    (180, 130, 70),
    (230, 200, 120),
    (200, 80, 40),
    (150, 150, 150),
    (235, 235, 235),
    (60, 90, 200),
    (220, 70, 150),
    (90, 170, 90),
    (140, 60, 170),
)
_EYE_COLOURS: tuple[RGB, ...] = (
    (70, 45, 25),
    (40, 90, 160),
    (60, 130, 70),
    (110, 110, 120),
    (130, 90, 40),
    (30, 30, 30),
    (150, 60, 160),
)


@dataclass(frozen=True, kw_only=True)
class Voice:
    """How a character sounds, for both speech backends."""

    espeak_voice: str
    """espeak-ng voice name with variant, e.g. `en-us+f3`."""
    rate_wpm: int
    """Speaking rate (words per minute)."""
    pitch: int
    """espeak-ng pitch (0..99)."""
    f0_hz: float
    """Mean fundamental frequency of the built-in formant synthesizer (Hz)."""
    formant_scale: float
    """Vocal-tract scale of the formant synthesizer (1.0 adult male, ~1.2 adult female)."""


@dataclass(frozen=True, kw_only=True)
class Character:
    """Every time-invariant trait of one Stage character (seed-determined)."""

    identity_seed: int
    split: str
    # head and face geometry (units: head half-width = 1)
    head_shape: str
    head_aspect: float
    """Head half-height / half-width."""
    jaw: float
    """Width of the lower face relative to the upper face (0.6 narrow chin .. 1.1 square)."""
    skin: RGB
    cheek_blush: float
    """Opacity-like strength of cheek blush (0 none .. 1)."""
    freckles: bool
    eye_size: float
    eye_spacing: float
    """Half distance between the eyes as a longitude (radians)."""
    eye_colour: RGB
    eyelashes: bool
    brow_thickness: float
    nose: str
    nose_size: float
    mouth_width: float
    lip_colour: RGB
    ear_size: float
    # hair and accessories
    hair_style: str
    hair_colour: RGB
    facial_hair: str
    glasses: str
    glasses_colour: RGB
    hat: str
    hat_colour: RGB
    earrings: bool
    # body and scene
    clothing: RGB
    clothing_2: RGB
    clothing_pattern: str
    shoulder_width: float
    background: RGB
    background_2: RGB
    background_pattern: str
    # behaviour
    voice: Voice
    lip_lead_frames: int
    """Frames by which the mouth leads the audio: `LIP_LEAD_FRAMES` for every character."""
    expressiveness: float
    """Scale of prosody-driven head and brow motion (0.5 calm .. 1.5 lively)."""
    blink_rate_hz: float
    """Mean blinks per second."""
    nod_tendency: float
    """Probability of nodding at a partner's phrase end."""

    @property
    def name(self) -> str:
        """A short stable name for logs and captions (`stage-000123`)."""
        return f"stage-{self.identity_seed:06d}"


def _jitter(rng: np.random.Generator, colour: RGB, amount: int) -> RGB:
    values = np.asarray(colour) + rng.integers(-amount, amount + 1, size=3)
    return tuple(int(v) for v in np.clip(values, 0, 255))  # type: ignore[return-value]


def _lip_lead(rng: np.random.Generator) -> int:
    """`LIP_LEAD_FRAMES`. Worlds before 2026-12-04 drew 0-2 frames here; the draw is kept so
    every other trait of a seed's character stays as it was."""
    rng.integers(0, 3)
    return LIP_LEAD_FRAMES


def _pick(rng: np.random.Generator, options: tuple, weights: tuple[float, ...] | None = None):
    if weights is None:
        return options[int(rng.integers(len(options)))]
    p = np.asarray(weights, dtype=float)
    return options[int(rng.choice(len(options), p=p / p.sum()))]


def _random_colour(rng: np.random.Generator, lo: int = 30, hi: int = 235) -> RGB:
    return tuple(int(v) for v in rng.integers(lo, hi, size=3))  # type: ignore[return-value]


def _make_voice(rng: np.random.Generator) -> Voice:
    female = bool(rng.random() < 0.5)
    variant = f"f{rng.integers(1, 6)}" if female else f"m{rng.integers(1, 8)}"
    accent = _pick(rng, ("en-us", "en-gb", "en-us", "en-gb-x-rp", "en-029", "en-gb-scotland"))
    return Voice(
        espeak_voice=f"{accent}+{variant}",
        rate_wpm=int(rng.integers(140, 200)),
        pitch=int(rng.integers(25, 80)),
        f0_hz=float(rng.uniform(175, 240) if female else rng.uniform(90, 140)),
        formant_scale=float(rng.uniform(1.12, 1.22) if female else rng.uniform(0.95, 1.05)),
    )


def make_character(identity_seed: int) -> Character:
    """Build the character of an identity seed (deterministic; see `schema.TRAIN_SEEDS`).

    Raises:
        ValueError: the seed is outside the Stage identity ranges.
    """
    split = split_of(int(identity_seed))
    rng = np.random.default_rng(np.random.SeedSequence([0x57A6E, int(identity_seed)]))
    head_shape = _pick(rng, HEAD_SHAPES)
    aspect = {"round": 1.0, "oval": 1.15, "square": 1.02, "heart": 1.1, "pear": 1.05, "long": 1.25}
    jaw = {"round": 0.95, "oval": 0.85, "square": 1.08, "heart": 0.65, "pear": 1.12, "long": 0.85}
    skin = _jitter(rng, _pick(rng, _SKIN_TONES, (3, 3, 3, 3, 3, 3, 3, 3, 1, 1, 1, 1)), 10)
    hair_style = _pick(rng, HAIR_STYLES)
    hair_colour = _jitter(rng, _pick(rng, _HAIR_COLOURS), 15)
    clothing_pattern = _pick(rng, CLOTHING_PATTERNS)
    hat = _pick(rng, HATS, (6, 1, 1, 1, 1))
    return Character(
        identity_seed=int(identity_seed),
        split=split,
        head_shape=head_shape,
        head_aspect=aspect[head_shape] * float(rng.uniform(0.95, 1.05)),
        jaw=jaw[head_shape] * float(rng.uniform(0.95, 1.05)),
        skin=skin,
        cheek_blush=float(rng.choice([0.0, 0.0, rng.uniform(0.2, 0.6)])),
        freckles=bool(rng.random() < 0.15),
        eye_size=float(rng.uniform(0.8, 1.25)),
        eye_spacing=float(rng.uniform(0.36, 0.5)),
        eye_colour=_jitter(rng, _pick(rng, _EYE_COLOURS), 12),
        eyelashes=bool(rng.random() < 0.4),
        brow_thickness=float(rng.uniform(0.08, 0.15)),
        nose=_pick(rng, NOSE_KINDS),
        nose_size=float(rng.uniform(0.8, 1.3)),
        mouth_width=float(rng.uniform(0.8, 1.2)),
        lip_colour=_jitter(rng, (190, 80, 90), 30),
        ear_size=float(rng.uniform(0.7, 1.3)),
        hair_style=hair_style,
        hair_colour=hair_colour,
        facial_hair=_pick(rng, FACIAL_HAIR, (8, 1, 1, 1)),
        glasses=_pick(rng, GLASSES, (5, 1, 1)),
        glasses_colour=_pick(rng, ((20, 20, 20), (150, 40, 40), (40, 60, 150), (120, 90, 30))),
        hat=hat,
        hat_colour=_random_colour(rng),
        earrings=bool(rng.random() < 0.2),
        clothing=_random_colour(rng),
        clothing_2=_random_colour(rng),
        clothing_pattern=clothing_pattern,
        shoulder_width=float(rng.uniform(1.5, 2.1)),
        background=_random_colour(rng, 60, 240),
        background_2=_random_colour(rng, 60, 240),
        background_pattern=_pick(rng, BACKGROUND_PATTERNS),
        voice=_make_voice(rng),
        lip_lead_frames=_lip_lead(rng),
        expressiveness=float(rng.uniform(0.6, 1.4)),
        blink_rate_hz=float(rng.uniform(0.2, 0.45)),
        nod_tendency=float(rng.uniform(0.35, 0.85)),
    )


def sample_identity(rng: np.random.Generator, split: str = "train") -> int:
    """Draw an identity seed uniformly from a split's range."""
    seeds = TRAIN_SEEDS if split == "train" else HELDOUT_SEEDS if split == "heldout" else None
    if seeds is None:
        raise ValueError(f"split must be 'train' or 'heldout', got {split!r}")
    return int(rng.integers(seeds.start, seeds.stop))
