"""Training samples read from an `lpm data encode` cache (see `lpm.data.encode`)."""

from __future__ import annotations

import json
from collections.abc import Iterable
from pathlib import Path

import torch
from safetensors import safe_open

from lpm.train.batch import TrainSample, mix_seed


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []


class CachedDataset:
    """Training samples from an encode cache, cropped to ``frames`` latent frames.

    The crop start of sample ``i`` is a function of (seed, i), so ``__getitem__`` is
    deterministic in the index as the `Dataset` protocol requires.
    """

    def __init__(
        self, root: str | Path, *, frames: int, seed: int = 0, span: int = 4,
        cue_actions: bool = False, mirror_skip_actions: Iterable[str] = (),
    ) -> None:  # fmt: skip
        """``cue_actions``: also give each cue's labelled action (`TrainSample.cue_action`),
        read from the Stage labels of the encoded dataset. ``mirror_skip_actions``: leave out
        the mirrored clips (``lpm data encode --mirror``) labelled with any of these actions."""
        self.root = Path(root)
        self.cue_actions = cue_actions
        entries = [json.loads(ln) for ln in _lines(self.root / "index.jsonl")]
        if not entries:
            raise FileNotFoundError(f"{self.root} holds no encoded clips (run `lpm data encode`)")
        self.entries = [e for e in entries if e["frames"] >= frames]
        if not self.entries:
            raise ValueError(f"no clip in {self.root} has {frames} latent frames; use fewer")
        self.frames, self.seed, self.span = frames, seed, span
        self._handles: dict[str, object] = {}
        skip = frozenset(mirror_skip_actions)
        if skip:
            keep = [i for i, e in enumerate(self.entries)
                    if not (e.get("mirror") and self.actions(i) & skip)]  # fmt: skip
            self.entries = [self.entries[i] for i in keep]

    def __len__(self) -> int:
        return len(self.entries)

    def category(self, index: int) -> str:
        return self.entries[index]["category"]

    def actions(self, index: int) -> frozenset[str]:
        """The actions labelled anywhere in clip ``index`` (read from the encoded Stage
        dataset's ``labels.json``; the whole clip, not only the crop)."""
        e = self.entries[index]
        if "actions" not in e:
            e["actions"] = sorted({a for a in self._frame_actions(index) if a != "none"})
        return frozenset(e["actions"])

    def _frame_actions(self, index: int) -> list[str]:
        """The labelled action of every video frame of clip ``index``."""
        e = self.entries[index]
        meta = json.loads((self.root / "encode.json").read_text())
        path = Path(meta["data"]) / e["clip"] / "labels.json"
        if not path.is_file():
            raise FileNotFoundError(
                f"{path} is missing: action labels are read from the Stage dataset this cache "
                f"was encoded from ({meta['data']}); regenerate it there"
            )
        actions = json.loads(path.read_text())["fields"].get("action", [])
        if e.get("mirror"):  # `lpm data encode --mirror`: a turn to the left shows as one right
            swap = {"turn_left": "turn_right", "turn_right": "turn_left"}
            actions = [swap.get(a, a) for a in actions]
        return actions

    def cue_action(self, index: int) -> torch.Tensor:
        """(S,) the labelled action (index of the Stage ``ACTIONS``) of each cue of clip
        ``index``: the label of the middle video frame (4f + 2, as `lpm data encode` times the
        cues) of the first latent frame f that follows it; -1 for a cue no frame follows."""
        from lpm.data.stage.schema import ACTIONS

        e = self.entries[index]
        if "cue_action" in e:
            return torch.tensor(e["cue_action"], dtype=torch.int64)
        get = lambda name: self._get(e["shard"], f"{e['key']}.{name}")
        cue_index, n_cues = get("cue_index"), get("cue_text").shape[0]
        labels = self._frame_actions(index)
        out = torch.full((n_cues,), -1, dtype=torch.int64)
        for f, s in enumerate(cue_index.tolist()):
            if s >= 0 and out[s] < 0 and labels:
                name = labels[min(f * self.span + self.span // 2, len(labels) - 1)]
                if name not in ACTIONS:
                    raise ValueError(f"clip {e['clip']} labels an unknown action {name!r}")
                out[s] = ACTIONS.index(name)
        e["cue_action"] = out.tolist()
        return out

    def _handle(self, shard: str):
        if shard not in self._handles:
            path = self.root / "shards" / shard
            if not path.is_file():
                raise FileNotFoundError(f"cache shard {path} is missing; re-run `lpm data encode`")
            self._handles[shard] = safe_open(str(path), framework="pt")
        return self._handles[shard]

    def _get(self, shard: str, key: str) -> torch.Tensor:
        return self._handle(shard).get_tensor(key)

    def _has(self, shard: str, key: str) -> bool:
        return key in self._handle(shard).keys()  # noqa: SIM118 - safe_open has no __contains__

    def __getitem__(self, index: int) -> TrainSample:
        e = self.entries[index]
        get = lambda name: self._get(e["shard"], f"{e['key']}.{name}")
        start = mix_seed(self.seed, index) % (e["frames"] - self.frames + 1)
        a0, a1 = start * self.span, (start + self.frames) * self.span
        cues = {}
        if self._has(e["shard"], f"{e['key']}.cue_index"):  # caches of encode version >= 2
            cues = {"cue_text": get("cue_text"), "cue_mask": get("cue_mask").bool(),
                    "cue_index": get("cue_index")[start : start + self.frames]}  # fmt: skip
            if self.cue_actions:
                cues["cue_action"] = self.cue_action(index)
        return TrainSample(
            latents=get("latents")[:, start : start + self.frames],
            text=get("text"),
            text_mask=get("text_mask").bool(),
            speak_audio=get("speak_audio")[a0:a1],
            listen_audio=get("listen_audio")[a0:a1],
            references=get("references"),
            reference_kinds=tuple((k, int(s)) for k, s in e["kinds"]),
            category=e["category"],
            index=index,
            **cues,
        )
