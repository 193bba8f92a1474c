"""Training samples and batches, the dataset protocol, a synthetic dataset and the sampler.

Legend: C latent channels, F latent frames, h, w latent grid, R reference images, Lt text
tokens, La audio tokens (one per video frame: La = F * temporal_compression).
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import torch

from lpm.config import BODY_VIEWS, ModelConfig
from lpm.models.dit.model import TextCues
from lpm.train.recipes import CATEGORIES


def mix_seed(*parts: int) -> int:
    """A 63-bit seed derived from integers (stable across processes and Python versions)."""
    digest = hashlib.blake2b(b",".join(str(int(p)).encode() for p in parts), digest_size=8)
    return int.from_bytes(digest.digest(), "little") & (2**63 - 1)


@dataclass(kw_only=True)
class TrainSample:
    """One clip. Tensors have no batch dimension."""

    latents: torch.Tensor
    """(C, F, h, w) clean VAE latents."""
    text: torch.Tensor
    """(Lt, text_dim) text-encoder features."""
    text_mask: torch.Tensor
    """(Lt,) bool, True = real token."""
    speak_audio: torch.Tensor
    """(La, audio_dim) features of the character's own speech."""
    listen_audio: torch.Tensor
    """(La, audio_dim) features of the other party's speech."""
    references: torch.Tensor
    """(C, R, h, w) clean identity-reference latents, kinds in `reference_kinds`."""
    reference_kinds: tuple[tuple[str, int], ...]
    """(type, subtype) of each reference: ``global`` / ``body`` / ``expression``."""
    category: str
    """One of `CATEGORIES`."""
    index: int
    """Position of the sample in its dataset."""
    cue_text: torch.Tensor | None = None
    """(S, Lt, text_dim) features of the clip's timed cues (S may be 0), or None."""
    cue_mask: torch.Tensor | None = None
    """(S, Lt) bool."""
    cue_index: torch.Tensor | None = None
    """(F,) int64: the cue each latent frame follows, -1 for none."""
    cue_action: torch.Tensor | None = None
    """(S,) int64: the labelled action each cue asks for (an index of the Stage ``ACTIONS``,
    0: none), -1 where unknown; None without labels (`TextCues.actions`)."""


@dataclass(kw_only=True)
class TrainBatch:
    """A batch of clips, stacked along a new leading dimension B."""

    latents: torch.Tensor
    """(B, C, F, h, w)."""
    text: torch.Tensor
    """(B, Lt, text_dim)."""
    text_mask: torch.Tensor
    """(B, Lt) bool."""
    speak_audio: torch.Tensor
    """(B, La, audio_dim)."""
    listen_audio: torch.Tensor
    """(B, La, audio_dim)."""
    references: torch.Tensor | None
    """(B, C, R, h, w) reference latents every sample has, or None."""
    reference_kinds: tuple[tuple[str, int], ...]
    """Kinds of the R references (shared by the batch)."""
    categories: tuple[str, ...]
    """(B,) data category per sample."""
    indices: torch.Tensor
    """(B,) int64 dataset index per sample; per-sample random draws are seeded by it."""
    flags: dict[str, torch.Tensor] = field(default_factory=dict)
    """Per-sample (B,) tensors filled by the conditioning step (drop_text, drop_audio, ...)."""
    cues: TextCues | None = None
    """Timed text cues padded to the batch's most cues, or None when no sample has any."""

    def to(self, device: torch.device) -> TrainBatch:
        """A copy with every tensor on ``device``."""
        move = lambda t: None if t is None else t.to(device, non_blocking=True)
        return TrainBatch(
            latents=move(self.latents), text=move(self.text), text_mask=move(self.text_mask),
            speak_audio=move(self.speak_audio), listen_audio=move(self.listen_audio),
            references=move(self.references), reference_kinds=self.reference_kinds,
            categories=self.categories, indices=self.indices,
            flags={k: move(v) for k, v in self.flags.items()},
            cues=None if self.cues is None else TextCues(
                move(self.cues.features), move(self.cues.mask), move(self.cues.index),
                None if self.cues.actions is None else move(self.cues.actions)),
        )  # fmt: skip

    @property
    def size(self) -> int:
        return self.latents.shape[0]


def collate(samples: list[TrainSample]) -> TrainBatch:
    """Stack samples; references are kept only for kinds every sample has."""
    if not samples:
        raise ValueError("cannot collate an empty list of samples")
    common = [k for k in samples[0].reference_kinds if all(k in s.reference_kinds for s in samples)]
    refs = None
    if common:
        refs = torch.stack([
            s.references[:, [s.reference_kinds.index(k) for k in common]] for s in samples
        ])  # fmt: skip
    return TrainBatch(
        latents=torch.stack([s.latents for s in samples]),
        text=torch.stack([s.text for s in samples]),
        text_mask=torch.stack([s.text_mask for s in samples]),
        speak_audio=torch.stack([s.speak_audio for s in samples]),
        listen_audio=torch.stack([s.listen_audio for s in samples]),
        references=refs,
        reference_kinds=tuple(common),
        categories=tuple(s.category for s in samples),
        indices=torch.tensor([s.index for s in samples], dtype=torch.int64),
        cues=collate_cues(samples),
    )


def collate_cues(samples: list[TrainSample]) -> TextCues | None:
    """The samples' cues, padded with empty cues to the most any sample has; None if none has
    one (a sample without cue tensors counts as having none)."""
    labelled = all(s.cue_action is not None for s in samples if s.cue_text is not None)
    return pad_cues(
        [
            None
            if s.cue_text is None
            else (s.cue_text, s.cue_mask, s.cue_index) + ((s.cue_action,) if labelled else ())
            for s in samples
        ],
        frames=samples[0].latents.shape[1],
    )


def pad_cues(cues: Sequence[tuple[torch.Tensor, ...] | None], frames: int) -> TextCues | None:
    """One `TextCues` of a batch from per-sample ``(features (S, Lc, D), mask (S, Lc), index
    (F,))`` or None, padded with empty cues to the largest S; None if no sample has a cue. A
    fourth element, each cue's labelled action (S,), gives ``TextCues.actions`` (padding -1)."""
    counts = [0 if c is None else c[0].shape[0] for c in cues]
    if max(counts, default=0) == 0:
        return None
    like = next(c[0] for c, n in zip(cues, counts, strict=True) if n)
    n_max, (lt, dim) = max(counts), like.shape[1:]
    feats = torch.zeros(len(cues), n_max, lt, dim, dtype=like.dtype)
    mask = torch.zeros(len(cues), n_max, lt, dtype=torch.bool)
    index = torch.full((len(cues), frames), -1, dtype=torch.int64)
    labelled = all(len(c) > 3 for c in cues if c is not None)
    actions = torch.full((len(cues), n_max), -1, dtype=torch.int64) if labelled else None
    for i, (c, n) in enumerate(zip(cues, counts, strict=True)):
        if n:
            feats[i, :n], mask[i, :n], index[i] = c[0], c[1].bool(), c[2]
            if actions is not None:
                actions[i, :n] = c[3]
    return TextCues(feats, mask, index, actions)


@runtime_checkable
class Dataset(Protocol):
    """Random access to training samples; ``__getitem__`` must be deterministic in the index."""

    def __len__(self) -> int: ...

    def __getitem__(self, index: int) -> TrainSample: ...

    def category(self, index: int) -> str:
        """The sample's category without loading it (used to filter by curriculum stage)."""
        ...


class SyntheticDataset:
    """Random tensors with a model config's shapes; sample ``i`` is a function of (seed, i) only.

    Used by tests and benchmarks. Every sample carries a global reference, the 4 body views and
    2 expression references; categories cycle through `CATEGORIES` in a seeded order.
    """

    def __init__(
        self, cfg: ModelConfig, *, size: int, latent_shape: tuple[int, int, int], seed: int = 0
    ) -> None:
        if size < 1:
            raise ValueError(f"size={size} must be >= 1")
        self.cfg, self.size, self.seed = cfg, size, seed
        self.frames, self.height, self.width = latent_shape
        ph, pw = cfg.patch_size[1:]
        if self.height % ph or self.width % pw or self.frames % cfg.patch_size[0]:
            raise ValueError(
                f"latent_shape={latent_shape} must be divisible by patch_size {cfg.patch_size}"
            )
        self.kinds = (("global", 0), *(("body", i) for i in range(len(BODY_VIEWS))),
                      ("expression", 0), ("expression", 1))  # fmt: skip

    def __len__(self) -> int:
        return self.size

    def category(self, index: int) -> str:
        return CATEGORIES[mix_seed(self.seed, index, 1) % len(CATEGORIES)]

    def __getitem__(self, index: int) -> TrainSample:
        if not 0 <= index < self.size:
            raise IndexError(f"index {index} out of range for {self.size} samples")
        cfg = self.cfg
        g = torch.Generator().manual_seed(mix_seed(self.seed, index))
        grid = (self.height, self.width)
        n_audio = self.frames * cfg.temporal_compression
        n_text = int(torch.randint(1, cfg.text_len + 1, (1,), generator=g))
        text_mask = torch.arange(cfg.text_len) < n_text
        text = torch.randn(cfg.text_len, cfg.text_dim, generator=g) * text_mask[:, None]
        category = self.category(index)
        silent = torch.zeros(n_audio, cfg.audio_dim)
        speak = torch.randn(n_audio, cfg.audio_dim, generator=g)
        listen = torch.randn(n_audio, cfg.audio_dim, generator=g)
        return TrainSample(
            latents=torch.randn(cfg.in_channels, self.frames, *grid, generator=g),
            text=text,
            text_mask=text_mask,
            speak_audio=speak if category in ("speak", "conversation") else silent,
            listen_audio=listen if category in ("listen", "conversation") else silent,
            references=torch.randn(cfg.in_channels, len(self.kinds), *grid, generator=g),
            reference_kinds=self.kinds,
            category=category,
            index=index,
        )


@dataclass(kw_only=True)
class SamplerState:
    """Where the sampler is: ``epoch`` over the stage's subset and ``position`` in it."""

    stage: int = 0
    epoch: int = 0
    position: int = 0

    def to_dict(self) -> dict[str, int]:
        return {"stage": self.stage, "epoch": self.epoch, "position": self.position}


def action_repeats(
    actions: Sequence[Collection[str]], most: int = 4, weights: Mapping[str, float] | None = None
) -> list[int]:
    """How often to draw each clip so that rare actions are seen about as often as common ones.

    ``actions[i]``: the labelled actions clip i shows. A clip is repeated
    ``round(w_a * n_max / n_a)`` times for the action a it shows that asks for the most
    (n: clips showing an action; w: ``weights``, default 1 each; at most ``most``); clips
    without an action once.
    """
    weights = dict(weights or {})
    if any(w <= 0 for w in weights.values()):
        raise ValueError(f"action weights must be > 0, got {weights}")
    counts = Counter(a for acts in actions for a in set(acts))
    if not counts:
        return [1] * len(actions)
    unknown = sorted(set(weights) - set(counts))
    if unknown:
        raise ValueError(f"action weights name actions no clip shows: {unknown}; "
                         f"labelled actions: {sorted(counts)}")  # fmt: skip
    top = max(counts.values())
    want = lambda a: max(1, round(weights.get(a, 1.0) * top / counts[a]))
    return [min(most, max((want(a) for a in set(acts)), default=1)) for acts in actions]


class StageSampler:
    """Deterministic, resumable, rank-aware batches of dataset indices for a curriculum.

    Each stage draws from the indices whose category the stage allows. An epoch is a
    permutation seeded by (seed, stage, epoch); a global batch takes the next ``global_batch``
    positions (an incomplete tail is skipped and a new epoch begins), and rank r keeps the r-th
    contiguous slice of it. The state is (stage, epoch, position), so a resumed run continues
    with exactly the batches an uninterrupted one would have seen, on any number of ranks.
    """

    def __init__(
        self, dataset: Dataset, stage_categories: list[tuple[str, ...]], *, global_batch: int,
        rank: int = 0, world_size: int = 1, seed: int = 0, repeats: Sequence[int] | None = None,
    ) -> None:  # fmt: skip
        """``repeats[i]``: how many times sample i appears in an epoch (default once each)."""
        if global_batch % world_size:
            raise ValueError(
                f"batch_size={global_batch} must be divisible by the world size {world_size}"
            )
        self.global_batch, self.rank, self.world_size, self.seed = (
            global_batch,
            rank,
            world_size,
            seed,
        )
        categories = [dataset.category(i) for i in range(len(dataset))]
        if repeats is None:
            repeats = [1] * len(categories)
        if len(repeats) != len(categories) or min(repeats, default=1) < 1:
            raise ValueError(
                f"repeats must give every one of the {len(categories)} samples a count >= 1"
            )
        self.pools: list[torch.Tensor] = []
        for s, allowed in enumerate(stage_categories):
            pool = torch.tensor(
                [i for i, c in enumerate(categories) if c in allowed for _ in range(repeats[i])],
                dtype=torch.int64,
            )
            if len(pool) < global_batch:
                raise ValueError(
                    f"stage {s} allows categories {allowed}, which only {len(pool)} samples have; "
                    f"a batch needs {global_batch}: use a larger dataset or smaller batch_size"
                )
            self.pools.append(pool)
        self.state = SamplerState()
        self._perm: tuple[tuple[int, int], torch.Tensor] | None = None

    def _permutation(self) -> torch.Tensor:
        key = (self.state.stage, self.state.epoch)
        if self._perm is None or self._perm[0] != key:
            g = torch.Generator().manual_seed(mix_seed(self.seed, *key, 7))
            pool = self.pools[self.state.stage]
            self._perm = (key, pool[torch.randperm(len(pool), generator=g)])
        return self._perm[1]

    def next_indices(self, stage: int) -> list[int]:
        """This rank's dataset indices for the next step in curriculum stage ``stage``."""
        if stage != self.state.stage:
            self.state = SamplerState(stage=stage)
        perm = self._permutation()
        if self.state.position + self.global_batch > len(perm):
            self.state = SamplerState(stage=stage, epoch=self.state.epoch + 1)
            perm = self._permutation()
        start = self.state.position
        self.state.position += self.global_batch
        local = self.global_batch // self.world_size
        chunk = perm[start + self.rank * local : start + (self.rank + 1) * local]
        return chunk.tolist()

    def state_dict(self) -> dict[str, int]:
        return self.state.to_dict()

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.state = SamplerState(**{k: int(state[k]) for k in ("stage", "epoch", "position")})
