"""Feature caching (`lpm data encode`) and the dataset that trains from the cache.

Encoding turns clip directories (the Stage schema, `docs/stage.md`; real-footage output uses
the same schema) into safetensors shards of everything training needs: VAE latents, per-frame
speak/listen audio features, text features of the clip caption and of its timed cues (with the
cue each latent frame follows) and reference latents.

Legend: T video frames, F = T // 4 latent frames, C latent channels, h/w latent grid,
R reference images, Lt text tokens, D feature width, S cues.

Frame alignment (as `lpm.inference.pipeline`): a clip of T frames keeps its first 4F frames;
frames 3 .. 4F-1 go through the causal VAE, so latent f covers video frames [4f, 4f + 4).

Cache layout::

    <out>/encode.json                 settings + encoder description (a rerun must match)
    <out>/index.jsonl                 one line per encoded clip: id, shard, category, frames, kinds
    <out>/shards/shard-00000.safetensors   tensors "<clip>.<name>"
    <out>/errors.jsonl                clips that could not be encoded, with the reason

Under torchrun every rank writes ``shards/shard-r<rank>-NNNNN.safetensors`` and
``index.part-<rank>.jsonl``, merged into index.jsonl by rank 0 (`encode_dataset`).

With ``mirror`` every clip is encoded a second time mirrored left to right (index entry
``"mirror": true``, key ``<key>~mirror``): frames and references flipped, the left and right
body-view references swapped, and "left"/"right" swapped in caption and cues, so that a turn to
either side is seen on every face. `CachedDataset` swaps the ``turn_left``/``turn_right`` labels
of a mirrored clip to match.

`lpm.train.cache.CachedDataset` reads the cache back as training samples.

Shards are written atomically and indexed only afterwards, so a killed run resumes by skipping
indexed clips; a corrupt or missing file is reported with its path and skipped (counted and
listed at the end) or fatal, as the user chooses.
"""

from __future__ import annotations

import json
import logging
import os
import re
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import islice
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from safetensors.torch import save_file

from lpm.config import BODY_VIEWS
from lpm.data.stage.schema import EXPRESSIONS

log = logging.getLogger(__name__)

MODE_TO_CATEGORY = {"conversation": "conversation", "speak": "speak", "listen": "listen",
                    "idle": "silence"}  # fmt: skip
ENCODE_VERSION = 2
"""2: timed cues (``cue_text`` (S, Lt, D), ``cue_mask`` (S, Lt), ``cue_index`` (F,))."""


def reference_files() -> list[tuple[str, tuple[str, int]]]:
    """(file name under refs/, (kind, subtype)) of every reference a clip may carry."""
    files = [("global_0.png", ("global", 0))]
    files += [(f"view_{v}.png", ("body", i)) for i, v in enumerate(BODY_VIEWS)]
    files += [(f"expr_{e}.png", ("expression", i)) for i, e in enumerate(EXPRESSIONS)]
    return files


class ClipError(ValueError):
    """A clip that cannot be encoded; the message names the file and what is wrong."""


class _Stopped(ClipError):
    """This rank stopped because another rank met a bad clip (``on_error="fail"``)."""


@dataclass(kw_only=True)
class EncodeConfig:
    """Settings of one `lpm data encode` run."""

    data: Path
    """Dataset directory holding manifest.jsonl and clips/."""
    out: Path
    """Cache directory."""
    shard_clips: int = 64
    """Clips per shard file."""
    on_error: Literal["skip", "fail"] = "skip"
    """``skip``: report and continue; ``fail``: stop at the first bad clip."""
    mirror: bool = False
    """Also encode every clip mirrored left to right (see the module docstring)."""
    prefetch: int = 0
    """Clips read and decoded ahead on a background thread while the encoders work (for
    encoders on a GPU); 0 reads each clip when its turn comes."""

    def __post_init__(self) -> None:
        self.data, self.out = Path(self.data), Path(self.out)
        if self.shard_clips < 1:
            raise ValueError(f"shard_clips={self.shard_clips} must be >= 1")
        if self.prefetch < 0:
            raise ValueError(f"prefetch={self.prefetch} must be >= 0")
        if self.on_error not in ("skip", "fail"):
            raise ValueError(f"on_error={self.on_error!r} must be 'skip' or 'fail'")
        if self.out.exists() and not self.out.is_dir():
            raise ValueError(f"--out {self.out} is a file; give a directory for the cache")


@dataclass
class EncodeReport:
    encoded: int = 0
    already_done: int = 0
    skipped: list[tuple[str, str]] = field(default_factory=list)
    """(clip directory, reason) of every clip that could not be encoded."""


@dataclass
class ClipInputs:
    """One clip as read from its directory: what `ClipEncoder.encode` turns into features."""

    clip_dir: Path
    frames: np.ndarray
    """(T, H, W, 3) uint8, mirrored if the clip was read mirrored."""
    waves: dict[str, np.ndarray]
    """``speak`` and ``listen`` (N,) at the encoder's sample rate."""
    caption: str
    cues: list[tuple[int, int, str]]
    """(start frame, end frame, text) of each timed cue."""
    images: list[np.ndarray]
    """Reference images (H, W, 3) uint8, each of kind ``kinds[i]``."""
    kinds: list[tuple[str, int]]


class ClipEncoder:
    """Encodes one clip directory with a bundle's VAE, text and audio encoders.

    The encoders run where their weights are (`load_encoders(..., device=...)`): decoded frames
    and audio go to that device and the features come back to the CPU in float32."""

    def __init__(self, vae, text_encoder, audio_encoder, sample_rate: int, span: int = 4) -> None:
        self.vae, self.text, self.audio = vae, text_encoder, audio_encoder
        self.sample_rate, self.span = sample_rate, span
        weights = next(iter(vae.parameters()), None)
        self.device = weights.device if weights is not None else torch.device("cpu")

    def describe(self) -> dict:
        return {
            "version": ENCODE_VERSION,
            "vae_z_dim": int(self.vae.z_dim),
            "text_dim": int(getattr(self.text, "dim", 0)),
            "audio_encoder": type(self.audio).__name__,
            "sample_rate": self.sample_rate,
        }

    def __call__(
        self, clip_dir: Path, category: str = "", mirror: bool = False
    ) -> dict[str, torch.Tensor | list]:
        """The clip's features; ``mirror``: of the clip mirrored left to right."""
        return self.encode(self.read(clip_dir, mirror))

    def read(self, clip_dir: Path, mirror: bool = False) -> ClipInputs:
        """Everything `encode` needs from ``clip_dir``, read and decoded on the CPU (no model
        runs here, so `encode_dataset` reads the next clips while the encoders work)."""
        from lpm.media import read_image, read_video
        from lpm.models.audio import AudioLoadError, load_audio

        try:
            frames, _ = read_video(clip_dir / "video.mp4")
        except (FileNotFoundError, ValueError) as err:
            raise ClipError(str(err)) from None
        if len(frames) < self.span:
            raise ClipError(
                f"{clip_dir / 'video.mp4'} has {len(frames)} frames; need >= {self.span}"
            )
        if mirror:
            frames = np.ascontiguousarray(frames[:, :, ::-1])
        waves = {}
        for name in ("speak", "listen"):
            path = clip_dir / f"{name}.wav"
            try:
                waves[name] = load_audio(path, self.sample_rate, allow_silent=True)
            except (FileNotFoundError, AudioLoadError) as err:
                raise ClipError(f"{path}: {err}") from None
        kinds, images = [], []
        for fname, kind in reference_files():
            if mirror:  # the mirror image of the view from the left is the view from the right
                fname = _MIRROR_FILE.get(fname, fname)
            path = clip_dir / "refs" / fname
            if path.is_file():
                try:
                    image = read_image(path)
                except ValueError as err:
                    raise ClipError(str(err)) from None
                images.append(np.ascontiguousarray(image[:, ::-1]) if mirror else image)
                kinds.append(kind)
        if len({im.shape for im in images}) > 1:
            raise ClipError(f"{clip_dir / 'refs'}: reference images differ in size")
        return ClipInputs(
            clip_dir=clip_dir,
            frames=frames,
            waves=waves,
            caption=_sided(_caption(clip_dir), mirror),
            cues=[(a, b, _sided(text, mirror)) for a, b, text in _cue_spans(clip_dir)],
            images=images,
            kinds=kinds,
        )

    @torch.no_grad()
    def encode(self, clip: ClipInputs) -> dict[str, torch.Tensor | list]:
        """The features of a clip `read` has read."""
        n_lat = len(clip.frames) // self.span
        video = _to_video(clip.frames[self.span - 1 : n_lat * self.span]).to(self.device)
        latents = self.vae.encode(video)[0].float().cpu()  # (C, F, h, w)
        audio = {}
        for name, wave in clip.waves.items():
            wave_t = torch.from_numpy(wave)[None].to(self.device)
            audio[name] = self.audio(wave_t, n_lat * self.span)[0].float().cpu()
        text, mask = self.text.encode([clip.caption])
        text, mask = text.float().cpu(), mask.cpu()
        cue_text, cue_mask, cue_index = self._cues(clip.cues, n_lat, text)
        refs = []
        if clip.images:  # one batched encode: (R, 3, 1, H, W) -> (R, C, 1, h, w) -> (C, R, h, w)
            batch = torch.cat([_to_video(im[None]) for im in clip.images]).to(self.device)
            refs = [self.vae.encode(batch)[:, :, 0].transpose(0, 1).float().cpu()]
        out = {
            "latents": latents,
            "speak_audio": audio["speak"],
            "listen_audio": audio["listen"],
            "text": text[0],
            "text_mask": mask[0],
            "cue_text": cue_text,
            "cue_mask": cue_mask,
            "cue_index": cue_index,
            "references": torch.cat(refs, dim=1) if refs else latents[:, :0],
            "kinds": clip.kinds,
        }
        for key in ("latents", "speak_audio", "listen_audio", "text", "cue_text", "references"):
            if not torch.isfinite(out[key]).all():
                raise ClipError(f"{clip.clip_dir}: non-finite {key} after encoding")
        return out

    def _cues(self, spans: list[tuple[int, int, str]], n_lat: int, like: torch.Tensor):
        """Encoded cue prompts (S, Lt, D), their masks (S, Lt) and the cue of each latent frame
        (F,), -1 for none: latent f follows the cue covering video frame 4f + 2, the middle of
        the frames it holds. ``spans``: (start frame, end frame, text) of the clip's cues;
        ``like`` (1, Lt, D): the caption's features (shape of no cues)."""
        index = torch.full((n_lat,), -1, dtype=torch.int64)
        texts: list[str] = []
        for f in range(n_lat):
            frame = f * self.span + self.span // 2
            for start, end, text in spans:
                if start <= frame < end:
                    if text not in texts:
                        texts.append(text)
                    index[f] = texts.index(text)
                    break
        if not texts:
            empty = like.new_zeros(0, *like.shape[1:]).float()
            return empty, torch.zeros(empty.shape[:2], dtype=torch.bool), index
        feats, mask = self.text.encode(texts)
        return feats.float().cpu(), mask.bool().cpu(), index


_SIDE = re.compile(r"\b(left|right|Left|Right)\b")
_OTHER_SIDE = {"left": "right", "right": "left", "Left": "Right", "Right": "Left"}
_MIRROR_FILE = {"view_left.png": "view_right.png", "view_right.png": "view_left.png"}


def _sided(text: str, mirror: bool) -> str:
    """``text`` as said of the mirrored clip ("left" and "right" swapped) if ``mirror``."""
    return _SIDE.sub(lambda m: _OTHER_SIDE[m.group(1)], text) if mirror else text


def _cue_spans(clip_dir: Path) -> list[tuple[int, int, str]]:
    """(start frame, end frame, text) of the clip's timed cues; none if captions.json has none."""
    path = clip_dir / "captions.json"
    try:
        data = json.loads(path.read_text())
        return [(int(c["start_frame"]), int(c["end_frame"]), str(c["text"]))
                for c in data.get("cues", [])]  # fmt: skip
    except (OSError, json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
        raise ClipError(f"{path} has malformed cues: {err}") from None


def _to_video(frames_thwc: np.ndarray) -> torch.Tensor:
    """(T, H, W, 3) uint8 -> (1, 3, T, H, W) in [-1, 1]."""
    return torch.from_numpy(frames_thwc).permute(3, 0, 1, 2)[None].float() / 127.5 - 1.0


def _caption(clip_dir: Path) -> str:
    path = clip_dir / "captions.json"
    try:
        data = json.loads(path.read_text())
        return str(data["dense"][0]["text"])
    except (OSError, json.JSONDecodeError, KeyError, IndexError, TypeError) as err:
        raise ClipError(f"{path} has no dense caption: {err}") from None


def _manifest(data: Path) -> list[dict]:
    path = data / "manifest.jsonl"
    if not path.is_file():
        raise FileNotFoundError(
            f"{data} has no manifest.jsonl; build one with `lpm data stage` or `lpm data prep`"
        )
    lines = [ln for ln in path.read_text().splitlines() if ln.strip()]
    try:
        return [json.loads(ln) for ln in lines]
    except json.JSONDecodeError as err:
        raise ValueError(f"{path} is not valid JSONL: {err}") from None


def encode_dataset(
    cfg: EncodeConfig,
    encoder: ClipEncoder,
    progress: Callable[[int, int], None] | None = None,
    *,
    rank: int = 0,
    world_size: int = 1,
) -> EncodeReport:
    """Encode every clip of ``cfg.data`` not yet in the cache (see the module docstring).

    With ``world_size`` processes (`lpm data encode` under torchrun, one device each), process
    ``rank`` encodes the clips ``rank, rank + world_size, ...`` of those not yet cached into its
    own shards (``shard-r<rank>-NNNNN``) and part index (``index.part-<rank>.jsonl``); at the
    end rank 0 merges the parts into index.jsonl in manifest order, so that N processes write
    the index one process writes (shard names aside). A killed run's parts are merged when the
    next run starts. Every rank returns the report of the whole run.
    """
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
    entries = _manifest(cfg.data)
    settings = {"data": str(cfg.data.resolve()), **encoder.describe()}
    if cfg.mirror:  # recorded only when on, so caches without mirrors keep their settings
        settings["mirror"] = True
    sides = (False, True) if cfg.mirror else (False,)
    order = {(e["dir"], m): i for i, (e, m) in enumerate((e, m) for e in entries for m in sides)}
    failure = None
    if rank == 0:
        try:
            cfg.out.mkdir(parents=True, exist_ok=True)
            _check_settings(cfg.out / "encode.json", settings)
            _merge_parts(cfg.out, order)  # the parts of a killed run on several processes
        except (OSError, ValueError) as err:
            failure = err
    if world_size > 1:
        from lpm.parallel import broadcast_object

        failure = broadcast_object(failure)
    if failure is not None:
        raise failure
    index_path = cfg.out / "index.jsonl"
    done = {(e["clip"], bool(e.get("mirror"))) for e in map(json.loads, _lines(index_path))}
    report = EncodeReport(already_done=len(done))
    todo = [(e, m) for e in entries for m in sides if (e["dir"], m) not in done]
    todo = todo[rank::world_size]
    parted = world_size > 1
    part_path = cfg.out / f"index.part-{rank:03d}.jsonl" if parted else index_path
    errors_path = cfg.out / (f"errors.part-{rank:03d}.jsonl" if parted else "errors.jsonl")
    prefix = f"shard-r{rank:03d}-" if parted else "shard-"
    next_shard = _next_shard(cfg.out / "shards", prefix)
    pending: dict[str, torch.Tensor] = {}
    pending_index: list[dict] = []

    def flush() -> None:
        nonlocal next_shard, pending, pending_index
        if not pending_index:
            return
        name = f"{prefix}{next_shard:05d}.safetensors"
        _atomic_save(pending, cfg.out / "shards" / name)
        with part_path.open("a") as fh:
            for entry in pending_index:
                fh.write(json.dumps({**entry, "shard": name}) + "\n")
        next_shard += 1
        pending, pending_index = {}, []

    reads = _read_ahead(encoder.read, [(cfg.data / e["dir"], m) for e, m in todo], cfg.prefetch)
    for i, ((entry, mirror), clip) in enumerate(zip(todo, reads, strict=True)):
        if parted and cfg.on_error == "fail" and any(cfg.out.glob("errors.part-*.jsonl")):
            failure = _Stopped("stopped: another rank met a bad clip")
            break  # in fail mode an error part means a fatal clip on some rank
        clip_dir = cfg.data / entry["dir"]
        category = MODE_TO_CATEGORY.get(entry.get("mode", ""), "conversation")
        try:
            if isinstance(clip, ClipError):
                raise clip
            enc = encoder.encode(clip)
        except ClipError as err:
            with errors_path.open("a") as fh:
                fh.write(json.dumps({"clip": entry["dir"], "mirror": mirror,
                                     "error": str(err)}) + "\n")  # fmt: skip
            if cfg.on_error == "fail":
                failure = err
                break
            report.skipped.append((str(clip_dir) + (" (mirrored)" if mirror else ""), str(err)))
            log.warning("skipped %s: %s", clip_dir, err)
            continue
        key = entry["dir"].replace("/", "_") + ("~mirror" if mirror else "")
        for name, value in enc.items():
            if name != "kinds":
                pending[f"{key}.{name}"] = value.contiguous()
        pending_index.append({"clip": entry["dir"], "key": key, "category": category,
                              "frames": int(enc["latents"].shape[1]),
                              "kinds": [list(k) for k in enc["kinds"]],
                              **({"mirror": True} if mirror else {})})  # fmt: skip
        report.encoded += 1
        if len(pending_index) >= cfg.shard_clips:
            flush()
        if progress is not None:
            progress(i + 1, len(todo))
    reads.close()  # stops reading ahead after a fatal clip
    flush()  # clips encoded before a fatal one are kept
    if parted:
        report, failure = _gather(report, failure, cfg.out, order, rank)
    if failure is not None:
        raise failure
    return report


def _read_ahead(
    read: Callable[[Path, bool], ClipInputs], items: list[tuple[Path, bool]], ahead: int
) -> Iterator[ClipInputs | ClipError]:
    """``read(*item)`` of every item in order, or the `ClipError` it raised; up to ``ahead``
    items are read on a background thread before they are asked for."""

    def attempt(item: tuple[Path, bool]) -> ClipInputs | ClipError:
        try:
            return read(*item)
        except ClipError as err:
            return err

    if ahead == 0:
        yield from map(attempt, items)
        return
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="encode-read") as pool:
        rest = iter(items)
        queue = deque(pool.submit(attempt, item) for item in islice(rest, ahead))
        try:
            while queue:
                clip = queue.popleft().result()
                for item in islice(rest, 1):
                    queue.append(pool.submit(attempt, item))
                yield clip
        finally:  # closed early: drop the reads not yet started
            for future in queue:
                future.cancel()


def _gather(report: EncodeReport, failure, out: Path, order: dict, rank: int):
    """The whole run's report and first failure on every rank, once rank 0 has merged the
    parts of every rank into index.jsonl."""
    from lpm.parallel import all_gather_object, barrier

    reports, failures = zip(*all_gather_object((report, failure)), strict=True)
    if rank == 0:
        _merge_parts(out, order)
    barrier()  # the index is whole before any rank returns
    whole = EncodeReport(
        encoded=sum(r.encoded for r in reports),
        already_done=report.already_done,
        skipped=[s for r in reports for s in r.skipped],
    )
    # a rank's own bad clip before "another rank stopped" (sorted is stable)
    failures = sorted((f for f in failures if f is not None), key=lambda f: isinstance(f, _Stopped))
    return whole, failures[0] if failures else None


def _merge_parts(out: Path, order: dict) -> None:
    """Move the entries of every part index (``index.part-*.jsonl``) not yet indexed into
    index.jsonl, in manifest order (``order``: (clip, mirror) -> position), and the part error
    logs into errors.jsonl; then delete the parts. Safe to repeat after a kill."""
    index_path = out / "index.jsonl"
    done = {(e["clip"], bool(e.get("mirror"))) for e in map(json.loads, _lines(index_path))}
    parts = sorted(out.glob("index.part-*.jsonl"))
    new: dict[tuple[str, bool], dict] = {}
    for part in parts:
        for entry in map(json.loads, _lines(part)):
            name = (entry["clip"], bool(entry.get("mirror")))
            if name not in done:
                new[name] = entry
    if new:
        last = len(order)
        with index_path.open("a") as fh:
            for name in sorted(new, key=lambda n: (order.get(n, last), n)):
                fh.write(json.dumps(new[name]) + "\n")
            fh.flush()
            os.fsync(fh.fileno())
    error_parts = sorted(out.glob("errors.part-*.jsonl"))
    if error_parts:
        with (out / "errors.jsonl").open("a") as fh:
            for part in error_parts:
                fh.writelines(line + "\n" for line in _lines(part))
    for part in parts + error_parts:
        part.unlink()


def _next_shard(shards: Path, prefix: str) -> int:
    """One past the highest shard number written under ``prefix`` (0 for none)."""
    pattern = re.compile(re.escape(prefix) + r"(\d+)\.safetensors")
    numbers = [int(m.group(1)) for p in shards.glob("*.safetensors")
               if (m := pattern.fullmatch(p.name))]  # fmt: skip
    return max(numbers, default=-1) + 1


def _lines(path: Path) -> list[str]:
    return [ln for ln in path.read_text().splitlines() if ln.strip()] if path.is_file() else []


def _check_settings(path: Path, settings: dict) -> None:
    if path.is_file():
        old = json.loads(path.read_text())
        diff = sorted(k for k in set(old) | set(settings) if old.get(k) != settings.get(k))
        if diff:
            raise ValueError(
                f"{path.parent} was encoded with other settings ({', '.join(diff)} differ); "
                "use a new --out directory"
            )
        return
    path.write_text(json.dumps(settings, indent=2, sort_keys=True))


def _atomic_save(tensors: dict[str, torch.Tensor], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        save_file(tensors, str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
