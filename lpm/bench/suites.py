"""Benchmark suites: ordered lists of cases, built in (Stage) or read from a suite file.

`stage-1000` follows the paper's composition (speaking 400, listening 200, conversation 200,
diverse motion 100, character generalization 100; durations mostly 5-180 s and ~10% long cases
of 3 min to 1 h) over held-out Stage identities. Every case spec is derived from
(`suite_seed`, case index) alone, so the suite is a cheap, deterministic list: nothing is rendered
until a case is materialised. `duration_scale` shrinks every duration (a laptop run).
`stage-mini` is a 6-case suite for CI. A user suite is a JSON/YAML file
`{"format": "lpm-bench-suite/1", "name": ..., "cases": [case, ...]}` (or a directory holding
`suite.yaml` / `suite.json`); relative paths in its cases resolve against the file's directory.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lpm.bench.case import (
    CaseSpec,
    DiversityTags,
    ReferenceSpec,
    StageSource,
    read_structured,
)
from lpm.data.stage.character import Character, make_character
from lpm.data.stage.schema import EXPRESSIONS, HELDOUT_SEEDS, TRAIN_SEEDS, VIEWS

SUITE_FORMAT = "lpm-bench-suite/1"
"""Version tag of the suite file format."""

STAGE_1000_COMPOSITION: dict[str, int] = {
    "speaking": 400,
    "listening": 200,
    "conversation": 200,
    "diverse-motion": 100,
    "character-generalization": 100,
}
"""Cases per subset of `stage-1000` (the paper's LPM-Bench composition)."""

LONG_CASE_S = 180.0
"""Cases of at least this many (unscaled) seconds are `long`: identity drift is reported."""
LONG_FRACTION = 0.10
"""Fraction of long cases (3 min to 1 h) in `stage-1000`."""
MIN_CASE_S = 2.0
"""Shortest duration (seconds) after `duration_scale` is applied."""


@dataclass(frozen=True, kw_only=True)
class Suite:
    """An ordered list of cases; `root` resolves the cases' relative paths."""

    name: str
    cases: tuple[CaseSpec, ...]
    root: Path = field(default_factory=Path.cwd)
    description: str = ""

    def __post_init__(self) -> None:
        if not self.cases:
            raise ValueError(f"suite {self.name!r} has no cases")
        ids = [c.id for c in self.cases]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"suite {self.name!r}: duplicate case ids {dup}")

    def composition(self) -> dict[str, int]:
        """Number of cases per subset."""
        out: dict[str, int] = {}
        for c in self.cases:
            out[c.subset] = out.get(c.subset, 0) + 1
        return out

    def to_dict(self) -> dict:
        return {
            "format": SUITE_FORMAT,
            "name": self.name,
            "description": self.description,
            "cases": [c.to_dict() for c in self.cases],
        }


def appearance_tags(ch: Character) -> tuple[str, ...]:
    """Appearance tags of a Stage character (hairstyle, accessories, facial hair)."""
    tags = [f"hair:{ch.hair_style}"]
    if ch.hat != "none":
        tags.append(f"hat:{ch.hat}")
    if ch.glasses != "none":
        tags.append(f"glasses:{ch.glasses}")
    if ch.facial_hair != "none":
        tags.append(f"facial_hair:{ch.facial_hair}")
    return tuple(tags)


def _rarity(ch: Character) -> int:
    """How unusual a character looks (accessories, facial hair, rare hairstyles)."""
    rare_hair = ch.hair_style in ("mohawk", "afro", "bald", "buzz")
    return sum((ch.hat != "none", ch.glasses != "none", ch.facial_hair != "none", rare_hair))


def _duration(rng: np.random.Generator, long: bool, subset: str) -> float:
    lo, hi = (LONG_CASE_S, 3600.0) if long else (5.0, 180.0)
    if subset == "diverse-motion" and not long:
        hi = 60.0
    return round(float(math.exp(rng.uniform(math.log(lo), math.log(hi)))), 2)


def _references(rng: np.random.Generator, subset: str) -> tuple[ReferenceSpec, ...]:
    refs = [ReferenceSpec(kind="global", subtype="0")]
    full = subset == "character-generalization"
    if full or rng.random() < 0.3:
        views = (
            VIEWS if full else tuple(rng.choice(VIEWS, size=int(rng.integers(1, 5)), replace=False))
        )
        refs += [ReferenceSpec(kind="body", subtype=str(v)) for v in views]
    if full or subset == "diverse-motion" or rng.random() < 0.3:
        exprs = (
            EXPRESSIONS
            if full or subset == "diverse-motion"
            else tuple(rng.choice(EXPRESSIONS, size=int(rng.integers(1, 9)), replace=False))
        )
        refs += [ReferenceSpec(kind="expression", subtype=str(e)) for e in exprs]
    return tuple(refs)


_MODES = {
    "speaking": ("speak",),
    "listening": ("listen",),
    "conversation": ("conversation",),
    "diverse-motion": ("conversation", "speak"),
    "character-generalization": ("conversation", "speak", "listen"),
}


def stage_case(
    suite_seed: int,
    index: int,
    subset: str,
    *,
    long: bool = False,
    duration_scale: float = 1.0,
    size: int = 128,
    prefix: str = "",
    identities: range = HELDOUT_SEEDS,
) -> CaseSpec:
    """The deterministic case `index` of a Stage suite, with identities drawn from
    `identities` (the held-out seeds for every evaluation suite)."""
    rng = np.random.default_rng(np.random.SeedSequence([int(suite_seed), int(index), 0xBE4C]))
    pick = lambda: int(identities.start + rng.integers(len(identities)))
    performer = pick()
    if subset == "character-generalization":  # the most unusual of a few candidates
        performer = max((pick() for _ in range(8)), key=lambda s: _rarity(make_character(s)))
    partner = pick()
    while partner == performer:
        partner = pick()
    modes = _MODES[subset]
    mode = modes[int(rng.integers(len(modes)))]
    raw_s = _duration(rng, long, subset)
    seconds = round(max(MIN_CASE_S, raw_s * duration_scale), 2)
    ch = make_character(performer)
    voice = "high-voice" if ch.voice.formant_scale > 1.1 else "low-voice"
    rate = "fast" if ch.voice.rate_wpm > 170 else "slow" if ch.voice.rate_wpm < 140 else "medium"
    length = "long" if long else "medium" if raw_s >= 30 else "short"
    lively = "lively" if ch.expressiveness > 1.0 else "calm"
    return CaseSpec(
        id=f"{prefix}{subset}-{index:04d}",
        subset=subset,
        duration_s=seconds,
        references=_references(rng, subset),
        tags=DiversityTags(
            appearance=appearance_tags(ch),
            performance=(f"mode:{mode}", lively),
            audio=(voice, f"rate:{rate}", f"length:{length}"),
        ),
        stage=StageSource(
            performer_seed=performer,
            partner_seed=partner,
            seed=int(rng.integers(1 << 31)),
            mode=mode,
            size=size,
        ),
    )


def stage_1000(*, duration_scale: float = 1.0, size: int = 128, seed: int = 1000) -> Suite:
    """The 1,000-case Stage suite with the paper's composition (see the module docstring)."""
    if not 0 < duration_scale <= 1:
        raise ValueError(f"duration_scale must be in (0, 1], got {duration_scale}")
    cases, index = [], 0
    for subset, n in STAGE_1000_COMPOSITION.items():
        n_long = int(round(n * LONG_FRACTION))
        for k in range(n):
            cases.append(
                stage_case(
                    seed, index, subset, long=k < n_long, duration_scale=duration_scale, size=size
                )
            )
            index += 1
    return Suite(
        name="stage-1000",
        cases=tuple(cases),
        description="1,000 held-out Stage cases, LPM-Bench composition",
    )


def stage_mini(*, duration_scale: float = 1.0, size: int = 64, seed: int = 7) -> Suite:
    """A 6-case Stage suite for CI: one short case per subset plus one long conversation.

    Durations are fixed (2.5-8 s) rather than sampled so the suite stays fast;
    `duration_scale` > 1 is allowed here to lengthen it.
    """
    if duration_scale <= 0:
        raise ValueError(f"duration_scale must be positive, got {duration_scale}")
    seconds = {
        "speaking": 3.0,
        "listening": 3.0,
        "conversation": 4.0,
        "diverse-motion": 4.0,
        "character-generalization": 3.0,
    }
    cases = []
    for i, (subset, s) in enumerate(seconds.items()):
        c = stage_case(seed, i, subset, size=size)
        cases.append(_with_duration(c, s * duration_scale))
    long = stage_case(seed, len(seconds), "conversation", size=size, long=True)
    cases.append(_with_duration(long, 8.0 * duration_scale, new_id="conversation-long-0005"))
    return Suite(
        name="stage-mini", cases=tuple(cases), description="6 short held-out Stage cases for CI"
    )


def _with_duration(case: CaseSpec, seconds: float, new_id: str | None = None) -> CaseSpec:
    d = case.to_dict()
    d["duration_s"] = round(max(MIN_CASE_S, seconds), 2)
    if new_id:
        d["id"] = new_id
    return CaseSpec.from_dict(d)


def stage_heldout(*, duration_scale: float = 1.0, size: int = 64, seed: int = 11) -> Suite:
    """24 held-out Stage cases of 4 s that measure a model against its ground truth.

    8 speaking, 8 listening and 8 diverse-motion cases (text-triggered actions and expressions);
    the `lpm-nano` quality table (docs/nano.md) is computed on this suite.
    """
    if duration_scale <= 0:
        raise ValueError(f"duration_scale must be positive, got {duration_scale}")
    cases = []
    for i in range(24):
        subset = ("speaking", "listening", "diverse-motion")[i // 8]
        cases.append(_with_duration(stage_case(seed, i, subset, size=size), 4.0 * duration_scale))
    return Suite(
        name="stage-heldout", cases=tuple(cases),
        description="24 held-out Stage cases (speaking, listening, diverse motion), 4 s each",
    )  # fmt: skip


DPO_SUBSETS: tuple[str, ...] = ("speaking", "listening", "conversation", "diverse-motion")
"""Subsets `stage-dpo` cycles through, so any prefix of it (``--limit``) mixes them."""


def stage_dpo(*, duration_scale: float = 1.0, size: int = 64, seed: int = 23) -> Suite:
    """96 Stage cases of 2 s on *training* identities: the conditions that DPO post-training
    generates candidates for (`lpm dpo candidates`). Never an evaluation suite: its identities
    are those the model trained on, so held-out suites stay untouched by preference tuning."""
    if duration_scale <= 0:
        raise ValueError(f"duration_scale must be positive, got {duration_scale}")
    cases = []
    for i in range(96):
        subset = DPO_SUBSETS[i % len(DPO_SUBSETS)]
        case = stage_case(seed, i, subset, size=size, identities=TRAIN_SEEDS, prefix="dpo-")
        cases.append(_with_duration(case, 2.0 * duration_scale))
    return Suite(
        name="stage-dpo", cases=tuple(cases),
        description="96 Stage cases on training identities (DPO candidates), 2 s each",
    )  # fmt: skip


BUILTIN_SUITES = {"stage-1000": stage_1000, "stage-mini": stage_mini,
                  "stage-heldout": stage_heldout, "stage-dpo": stage_dpo}  # fmt: skip


def load_suite(name_or_path: str | Path, *, duration_scale: float = 1.0) -> Suite:
    """A built-in suite by name, or a suite file / directory (`suite.yaml` or `suite.json`)."""
    key = str(name_or_path)
    if key in BUILTIN_SUITES:
        return BUILTIN_SUITES[key](duration_scale=duration_scale)
    path = Path(name_or_path)
    if path.is_dir():
        found = [
            path / n for n in ("suite.yaml", "suite.yml", "suite.json") if (path / n).is_file()
        ]
        if not found:
            raise FileNotFoundError(f"suite directory {path} holds no suite.yaml or suite.json")
        path = found[0]
    if not path.is_file():
        raise ValueError(
            f"unknown suite {key!r}: not one of {sorted(BUILTIN_SUITES)} and not a suite file"
        )
    raw = read_structured(path)
    if not isinstance(raw, dict) or not isinstance(raw.get("cases"), list):
        raise ValueError(f"{path}: a suite file is a mapping with a `cases` list")
    fmt = raw.get("format", SUITE_FORMAT)
    if fmt != SUITE_FORMAT:
        raise ValueError(f"{path}: format must be {SUITE_FORMAT!r}, got {fmt!r}")
    cases = tuple(
        CaseSpec.from_dict(c, where=f"{path} case #{i}") for i, c in enumerate(raw["cases"])
    )
    for c in cases:
        for rel in [
            c.first_frame,
            c.speak_audio,
            c.listen_audio,
            c.ground_truth,
            *(r.path for r in c.references),
        ]:
            if rel and not (path.parent / rel).is_file():
                raise ValueError(
                    f"{path}: case {c.id!r} names {rel!r}, which does not exist "
                    f"(paths are relative to {path.parent})"
                )
    return Suite(
        name=str(raw.get("name") or path.stem),
        cases=cases,
        root=path.parent.resolve(),
        description=str(raw.get("description", "")),
    )
