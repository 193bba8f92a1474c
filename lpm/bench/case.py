"""The LPM-Bench case format (`lpm-bench-case/1`): one benchmark case as JSON or YAML.

A case says what to generate and how to judge it: its subset, the first frame, reference images
by type, speak and listen audio, timed text instructions (optionally naming the action or
expression they request), the duration and diversity tags. Inputs are either files (real cases;
paths relative to the suite file) or a `stage` block, from which the Stage world renders the
inputs and the ground truth (`lpm.bench.materialize`). `docs/bench.md` documents every field.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from lpm.data.stage.schema import ACTIONS, EXPRESSIONS, VIEWS, split_of

CASE_FORMAT = "lpm-bench-case/1"
"""Version tag of the case format; any incompatible change bumps it."""

SUBSETS: tuple[str, ...] = (
    "speaking",
    "listening",
    "conversation",
    "diverse-motion",
    "character-generalization",
)
"""The five subsets of LPM-Bench."""

REFERENCE_KINDS: dict[str, tuple[str, ...]] = {
    "global": ("0", "1", "2", "3"),
    "body": VIEWS,
    "expression": EXPRESSIONS,
}
"""Reference types and their subtypes (global references are numbered)."""

STAGE_MODES: tuple[str, ...] = ("conversation", "speak", "listen", "idle")


def _require(cond: bool, where: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{where}: {msg}")


@dataclass(frozen=True, kw_only=True)
class ReferenceSpec:
    """One identity reference image."""

    kind: str
    """`global`, `body` or `expression`."""
    subtype: str
    """global: `0`..`3`; body: a view (`front`, `left`, `right`, `back`); expression: a name."""
    path: str = ""
    """Image file (relative to the suite file); empty for Stage cases (rendered)."""

    def __post_init__(self) -> None:
        _require(
            self.kind in REFERENCE_KINDS,
            "reference.kind",
            f"must be one of {tuple(REFERENCE_KINDS)}, got {self.kind!r}",
        )
        _require(
            self.subtype in REFERENCE_KINDS[self.kind],
            "reference.subtype",
            f"a {self.kind} reference needs a subtype in {REFERENCE_KINDS[self.kind]}, "
            f"got {self.subtype!r}",
        )

    @property
    def name(self) -> str:
        """File stem used when materialised (`global_0`, `body_left`, `expression_happy`)."""
        return f"{self.kind}_{self.subtype}"


@dataclass(frozen=True, kw_only=True)
class Instruction:
    """A timed text instruction; `action` / `expression` name what it requests, if scorable."""

    start_s: float
    """Start (seconds from the video start)."""
    end_s: float
    """End (seconds, exclusive)."""
    text: str
    action: str | None = None
    """Requested action (one of `schema.ACTIONS[1:]`), scored by text controllability."""
    expression: str | None = None
    """Requested expression (one of `schema.EXPRESSIONS`), scored by text controllability."""

    def __post_init__(self) -> None:
        _require(
            0 <= self.start_s < self.end_s,
            "instruction",
            f"needs 0 <= start_s < end_s, got {self.start_s}..{self.end_s}",
        )
        _require(
            isinstance(self.text, str) and bool(self.text.strip()),
            "instruction.text",
            "must be a non-empty string",
        )
        _require(
            self.action is None or self.action in ACTIONS[1:],
            "instruction.action",
            f"must be one of {ACTIONS[1:]} or null, got {self.action!r}",
        )
        _require(
            self.expression is None or self.expression in EXPRESSIONS,
            "instruction.expression",
            f"must be one of {EXPRESSIONS} or null, got {self.expression!r}",
        )


@dataclass(frozen=True, kw_only=True)
class DiversityTags:
    """Free-form tags along the paper's three diversity axes (used to slice the report)."""

    appearance: tuple[str, ...] = ()
    performance: tuple[str, ...] = ()
    audio: tuple[str, ...] = ()


@dataclass(frozen=True, kw_only=True)
class StageSource:
    """Render this case's inputs and ground truth with the Stage world."""

    performer_seed: int
    """On-screen identity (a held-out seed for the shipped suites)."""
    partner_seed: int
    """Heard-only partner identity."""
    seed: int
    """Seed of script, voices and performance."""
    mode: str = "conversation"
    """Stage script mode: `conversation`, `speak`, `listen` or `idle`."""
    size: int = 128
    """Frame side (pixels)."""
    backend: str = "auto"
    """Speech backend: `auto`, `espeak` or `formant`."""

    def __post_init__(self) -> None:
        _require(
            self.mode in STAGE_MODES,
            "stage.mode",
            f"must be one of {STAGE_MODES}, got {self.mode!r}",
        )
        _require(self.size >= 32, "stage.size", f"must be >= 32 pixels, got {self.size}")
        _require(
            self.backend in ("auto", "espeak", "formant"),
            "stage.backend",
            f"must be auto, espeak or formant, got {self.backend!r}",
        )
        for name in ("performer_seed", "partner_seed"):
            try:
                split_of(getattr(self, name))
            except ValueError as err:
                raise ValueError(f"stage.{name}: {err}") from None


@dataclass(frozen=True, kw_only=True)
class CaseSpec:
    """One benchmark case (see the module docstring and `docs/bench.md`)."""

    id: str
    """Unique within its suite; letters, digits, `-`, `_`, `.` (used as a directory name)."""
    subset: str
    duration_s: float
    """Video length (seconds)."""
    fps: int = 24
    first_frame: str = ""
    """First-frame image (relative path); empty for Stage cases."""
    references: tuple[ReferenceSpec, ...] = ()
    speak_audio: str = ""
    """The character's own speech (relative path); empty: silence or rendered (Stage)."""
    listen_audio: str = ""
    """The partner's speech (relative path); empty: silence or rendered (Stage)."""
    instructions: tuple[Instruction, ...] = ()
    tags: DiversityTags = field(default_factory=DiversityTags)
    ground_truth: str = ""
    """Optional ground-truth video (relative path) for real cases."""
    stage: StageSource | None = None
    format: str = CASE_FORMAT

    def __post_init__(self) -> None:
        w = f"case {self.id!r}"
        _require(
            self.format == CASE_FORMAT, w, f"format must be {CASE_FORMAT!r}, got {self.format!r}"
        )
        _require(
            bool(self.id) and all(c.isalnum() or c in "-_." for c in self.id),
            w,
            "id must be non-empty and use only letters, digits, '-', '_', '.'",
        )
        _require(self.subset in SUBSETS, w, f"subset must be one of {SUBSETS}, got {self.subset!r}")
        _require(self.duration_s > 0, w, f"duration_s must be positive, got {self.duration_s}")
        _require(self.fps > 0, w, f"fps must be positive, got {self.fps}")
        if self.stage is None:
            _require(
                bool(self.first_frame),
                w,
                "a case without a `stage` block needs `first_frame` (an image path)",
            )
        for ins in self.instructions:
            _require(
                ins.start_s < self.duration_s,
                w,
                f"instruction at {ins.start_s} s starts after the end ({self.duration_s} s)",
            )
        names = [r.name for r in self.references]
        _require(len(names) == len(set(names)), w, f"duplicate references {names}")

    @property
    def num_frames(self) -> int:
        return int(round(self.duration_s * self.fps))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (the on-disk form)."""
        d = asdict(self)
        d["tags"] = {k: list(v) for k, v in d["tags"].items()}
        d["references"] = [dict(r) for r in d["references"]]
        d["instructions"] = [
            {k: v for k, v in i.items() if v is not None} for i in d["instructions"]
        ]
        if d["stage"] is None:
            del d["stage"]
        return {"format": d.pop("format"), **d}

    @classmethod
    def from_dict(cls, raw: Any, where: str = "case") -> CaseSpec:
        """Parse and validate a dict (JSON/YAML); errors name the case and the field."""
        if not isinstance(raw, dict):
            raise ValueError(f"{where}: a case must be a mapping, got {type(raw).__name__}")
        known = {f for f in cls.__dataclass_fields__}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise ValueError(f"{where}: unknown field(s) {unknown}; known fields: {sorted(known)}")
        for req in ("id", "subset", "duration_s"):
            if req not in raw:
                raise ValueError(f"{where}: missing required field {req!r}")
        d = dict(raw)
        d.setdefault("format", CASE_FORMAT)
        where = f"case {d['id']!r}"
        try:
            d["references"] = tuple(ReferenceSpec(**r) for r in d.get("references", ()))
            d["instructions"] = tuple(Instruction(**i) for i in d.get("instructions", ()))
            tags = d.get("tags", {}) or {}
            d["tags"] = DiversityTags(**{k: tuple(v) for k, v in tags.items()})
            if d.get("stage") is not None:
                d["stage"] = StageSource(**d["stage"])
        except TypeError as err:
            raise ValueError(f"{where}: {err}") from None
        except ValueError as err:
            raise ValueError(f"{where}: {err}") from None
        for key in ("duration_s",):
            d[key] = float(d[key])
        return cls(**d)


def read_structured(path: Path) -> Any:
    """Parse a JSON or YAML file (by suffix), with a clear error on bad syntax."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"{path} does not exist")
    text = path.read_text()
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml

            return yaml.safe_load(text)
        return json.loads(text)
    except Exception as err:  # noqa: BLE001 - any parse error becomes one clear message
        raise ValueError(f"{path} is not valid JSON/YAML: {err}") from None


def load_case(path: str | Path) -> CaseSpec:
    """Read one case file (JSON or YAML)."""
    return CaseSpec.from_dict(read_structured(Path(path)), where=str(path))


def save_case(case: CaseSpec, path: str | Path) -> Path:
    """Write a case as JSON."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(case.to_dict(), indent=2) + "\n")
    return path
