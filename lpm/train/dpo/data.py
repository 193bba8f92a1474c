"""The candidates directory written by ``lpm dpo candidates`` and the pairs read from it.

Legend: K candidates per condition, C latent channels, F latent frames, h/w latent grid,
R references, Lt text tokens, T audio tokens (one per video frame).

Layout of a candidates directory::

    candidates.json                  CandidateSpec: model, suite, K, sampling steps, seed
    conditions/<case>.safetensors    text (1, Lt, D), text_mask (1, Lt), speak_audio and
                                     listen_audio (1, T, D), references (1, C, R, h, w) and the
                                     candidates' clean latents x0 (K, C, F, h, w); with
                                     timed cues also cue_features (S, Lc, D), cue_mask (S, Lc)
                                     and cue_index (F,)
    conditions/<case>.json           case id and subset, reference kinds, audio offset, and per
                                     candidate its seed, scores per dimension and bench metrics
    cases/<case>/                    the materialised case (inputs, ground truth, readings)
    videos/<case>/<k>.mp4            the decoded candidates (with --save-videos)

A condition's JSON is written after its tensors, so a condition with a JSON file is complete.
"""

from __future__ import annotations

import dataclasses
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lpm.models.dit.model import References, TextCues
from lpm.train.batch import pad_cues
from lpm.train.dpo.pareto import Pair, select_pairs

CANDIDATES_FORMAT = "lpm-dpo-candidates/1"
SPEC_NAME = "candidates.json"
CONDITION_TENSORS = ("text", "text_mask", "speak_audio", "listen_audio", "references", "x0")
CUE_TENSORS = ("cue_features", "cue_mask", "cue_index")
"""Stored with a condition whose segment has timed cues (a cue model's candidates)."""


@dataclass(kw_only=True, frozen=True)
class CandidateSpec:
    """How the candidates of a directory were made; every condition shares it."""

    model: str
    """The bundle directory that generated them (absolute)."""
    suite: str
    """The suite whose cases are the conditions."""
    candidates: int
    """Candidates per condition (K)."""
    steps: int | None
    """Denoising steps (None: the bundle's default)."""
    seed: int
    """Candidate k of every condition is sampled with seed ``seed + k``."""

    def to_json(self) -> str:
        return json.dumps({"format": CANDIDATES_FORMAT, **dataclasses.asdict(self)}, indent=2)

    @classmethod
    def from_file(cls, path: Path) -> CandidateSpec:
        data = json.loads(path.read_text())
        if data.pop("format", None) != CANDIDATES_FORMAT:
            raise ValueError(f"{path} is not a DPO candidates spec ({CANDIDATES_FORMAT})")
        return cls(**data)


@dataclass(kw_only=True)
class ConditionRecord:
    """The JSON half of a condition: who it is and how its candidates scored."""

    id: str
    subset: str
    reference_kinds: tuple[tuple[str, int], ...]
    """Kinds of the R references (first frame, global, ...)."""
    audio_offset: int
    """Video frame of audio token 0, counted from the clip's first frame."""
    seeds: list[int]
    """Sampling seed of each candidate."""
    scores: list[dict[str, float | None]]
    """Per candidate: every `lpm.train.dpo.pareto.DIMENSIONS` score (None: not scorable)."""
    metrics: list[dict[str, float | None]]
    """Per candidate: its LPM-Bench metrics, for the record."""

    @property
    def size(self) -> int:
        return len(self.seeds)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=1)

    @classmethod
    def from_file(cls, path: Path) -> ConditionRecord:
        data = json.loads(path.read_text())
        data["reference_kinds"] = tuple((k, int(s)) for k, s in data["reference_kinds"])
        return cls(**data)


def condition_path(root: Path, case_id: str) -> Path:
    """``root/conditions/<case_id>`` (add ``.json`` / ``.safetensors``)."""
    return Path(root) / "conditions" / case_id


def save_condition(root: Path, record: ConditionRecord, tensors: dict[str, torch.Tensor]) -> None:
    """Write a condition's tensors, then its JSON (each atomically)."""
    missing = set(CONDITION_TENSORS) - set(tensors)
    if missing:
        raise ValueError(f"condition {record.id}: tensors {sorted(missing)} are missing")
    base = condition_path(root, record.id)
    base.parent.mkdir(parents=True, exist_ok=True)
    tmp = base.with_name(f".{base.name}.safetensors.tmp")
    save_file({k: v.detach().cpu().contiguous() for k, v in tensors.items()}, str(tmp))
    os.replace(tmp, base.with_suffix(".safetensors"))
    tmp = base.with_name(f".{base.name}.json.tmp")
    tmp.write_text(record.to_json())
    os.replace(tmp, base.with_suffix(".json"))


class CandidateSet:
    """Every complete condition of a candidates directory (sorted by case id)."""

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        if not (self.root / SPEC_NAME).is_file():
            raise FileNotFoundError(
                f"{self.root} holds no DPO candidates ({SPEC_NAME} is missing); make them with "
                f"`lpm dpo candidates --out {self.root}`"
            )
        self.spec = CandidateSpec.from_file(self.root / SPEC_NAME)
        files = sorted((self.root / "conditions").glob("*.json"))
        self.records = [ConditionRecord.from_file(p) for p in files]
        if not self.records:
            raise FileNotFoundError(
                f"{self.root} holds no finished condition yet; run `lpm dpo candidates --out "
                f"{self.root}` (it resumes)"
            )
        self._handles: dict[int, Any] = {}

    def __len__(self) -> int:
        return len(self.records)

    @property
    def num_candidates(self) -> int:
        return sum(r.size for r in self.records)

    def tensor(self, condition: int, name: str) -> torch.Tensor:
        """One stored tensor of a condition (see `CONDITION_TENSORS`)."""
        if condition not in self._handles:
            path = condition_path(self.root, self.records[condition].id).with_suffix(".safetensors")
            self._handles[condition] = safe_open(str(path), framework="pt")
        return self._handles[condition].get_tensor(name)

    def has(self, condition: int, name: str) -> bool:
        """Whether a condition stored the tensor ``name`` (cue tensors are optional)."""
        self.tensor(condition, "x0")  # opens the file
        return name in self._handles[condition].keys()  # noqa: SIM118 - safe_open

    def pairs(
        self, dimensions, *, tie_tolerance: float, margin: float, max_pairs_per_condition: int = 0
    ) -> list[Pair]:
        """Pareto pairs of every condition (`lpm.train.dpo.pareto.select_pairs`)."""
        return select_pairs(
            [r.scores for r in self.records], dimensions, tie_tolerance=tie_tolerance,
            margin=margin, max_pairs_per_condition=max_pairs_per_condition,
        )  # fmt: skip


class NoParetoPairsError(ValueError):
    """No candidate of any condition is Pareto-preferred to another."""


@dataclass(kw_only=True)
class PairBatch:
    """A batch of pairs: winners and losers share their condition."""

    x0_w: torch.Tensor
    """(B, C, F, h, w) clean latents of the winners."""
    x0_l: torch.Tensor
    """(B, C, F, h, w) clean latents of the losers."""
    text: torch.Tensor
    """(B, Lt, text_dim)."""
    text_mask: torch.Tensor
    """(B, Lt) bool."""
    speak_audio: torch.Tensor
    """(B, T, audio_dim)."""
    listen_audio: torch.Tensor
    """(B, T, audio_dim)."""
    references: References
    """(B, C, R, h, w) reference latents and their kinds."""
    audio_offset: int
    indices: list[int]
    """Pair index of each row; per-pair random draws are seeded by it."""
    cues: TextCues | None = None
    """Timed cues of each row's condition (padded), or None when no condition has any."""


class PairSet:
    """The selected pairs as a dataset for `lpm.train.batch.StageSampler` (one pair = one
    item; its category is its condition's subset)."""

    def __init__(self, candidates: CandidateSet, pairs: list[Pair]) -> None:
        self.candidates, self.pairs = candidates, pairs
        used = sorted({p.condition for p in pairs})
        records = [candidates.records[c] for c in used]
        # a batch stacks pairs of different conditions: their tensors must line up
        layouts = {(r.reference_kinds, r.audio_offset) for r in records}
        shapes = {tuple(candidates.tensor(c, "x0").shape[1:]) for c in used}
        if len(layouts) > 1 or len(shapes) > 1:
            raise ValueError(
                f"the conditions in {candidates.root} differ in reference kinds, audio offset or "
                f"latent shape ({sorted(layouts)}, {sorted(shapes)}); make candidates of one "
                "bundle and one clip length"
            )
        self.subsets = tuple(sorted({r.subset for r in records}))

    def __len__(self) -> int:
        return len(self.pairs)

    def category(self, index: int) -> str:
        return self.candidates.records[self.pairs[index].condition].subset

    def __getitem__(self, index: int) -> Pair:
        return self.pairs[index]

    def batch(self, indices: list[int], device: torch.device) -> PairBatch:
        """The pairs ``indices`` stacked on ``device``."""
        cs = self.candidates
        rows = [self.pairs[i] for i in indices]
        get = lambda name: torch.cat([cs.tensor(p.condition, name) for p in rows]).to(device)
        x0 = [cs.tensor(p.condition, "x0") for p in rows]
        record = cs.records[rows[0].condition]
        cues = pad_cues(
            [
                tuple(cs.tensor(p.condition, n) for n in CUE_TENSORS)
                if cs.has(p.condition, CUE_TENSORS[0])
                else None
                for p in rows
            ],
            frames=x0[0].shape[2],
        )
        return PairBatch(
            x0_w=torch.stack([x[p.winner] for x, p in zip(x0, rows, strict=True)]).to(device),
            x0_l=torch.stack([x[p.loser] for x, p in zip(x0, rows, strict=True)]).to(device),
            text=get("text").float(), text_mask=get("text_mask").bool(),
            speak_audio=get("speak_audio").float(), listen_audio=get("listen_audio").float(),
            references=References(get("references").float(), record.reference_kinds),
            audio_offset=record.audio_offset, indices=list(indices),
            cues=None if cues is None else TextCues(
                cues.features.float().to(device), cues.mask.to(device), cues.index.to(device)
            ),
        )  # fmt: skip
