"""The per-video chain of operators: load → shots → detect → filters → tracks → labels → audio
→ semantics → references → write.

Each operator is a function `op(work: VideoWork, cfg: PrepConfig) -> None` that reads what the
earlier ones left on `work` and adds its own output (documented on `VideoWork`); the chain can
stop after any of them (`PrepConfig.until`). `process_video` runs the chain for one source and
returns a JSON-ready report: per-shot verdicts, per-clip manifest entries and funnel counts.
"""

from __future__ import annotations

import hashlib
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from lpm.data.prep import labels as L
from lpm.data.prep.config import ORDER, PrepConfig
from lpm.data.prep.detect import FaceBackend, make_backend
from lpm.data.prep.filters import _analysis, judge_shot, sharpness
from lpm.data.prep.media import BadInput, Source, load_source
from lpm.data.prep.shots import ShotSpan, split_shots
from lpm.data.prep.track import Track, people_in_shot, track_shot

log = logging.getLogger(__name__)

FUNNEL = (
    "input",
    "decoded",
    "shots",
    "long_enough",
    "filtered",
    "tracks",
    "labelled",
    "verified",
    "written",
)
"""Funnel rows: clips (videos, shots, tracks, clips) and seconds each stage kept."""


@dataclass(kw_only=True)
class ClipPlan:
    """One single-person clip: a part of a track, with its labels."""

    track: Track
    """The track restricted to the clip's source frames [track.start, track.end)."""
    shot: int
    person: int
    """Person index within the source (same person across shots)."""
    codes: np.ndarray
    """(n,) per-frame state codes (`labels.SPEAK`, `LISTEN`, `IDLE`)."""
    speech: np.ndarray
    """(n,) bool speech present (any speaker)."""
    name: str = ""
    verdict: str = "keep"
    semantic: str = ""
    extra: dict = field(default_factory=dict)


@dataclass(kw_only=True)
class VideoWork:
    """Everything known about one source as the operators run."""

    path: Path
    source: Source | None = None
    """load: decoded frames and audio."""
    shots: list[ShotSpan] = field(default_factory=list)
    """shots: spans tiling the video, `verdict` keep / too_short."""
    tracks: dict[int, list[Track]] = field(default_factory=dict)
    """detect: every face track per shot index."""
    people: dict[int, list[Track]] = field(default_factory=dict)
    """filters: the person tracks of each kept shot."""
    speech: np.ndarray | None = None
    """labels: (T,) bool speech per source frame."""
    envelope: np.ndarray | None = None
    """labels: (T,) audio loudness (dB) per source frame."""
    clips: list[ClipPlan] = field(default_factory=list)
    """tracks / labels / semantics: the clip plans and their verdicts."""
    person_of: dict[tuple[int, int], int] = field(default_factory=dict)
    """tracks: (shot, track id) -> person index within the source."""
    funnel: dict[str, list[float]] = field(default_factory=dict)
    """stage -> [count, seconds]."""
    entries: list[dict] = field(default_factory=list)
    """write: manifest entries of the written clips."""


_BACKENDS: dict[tuple, FaceBackend] = {}


def backend_for(cfg: PrepConfig) -> FaceBackend:
    """The face backend of a config, built once per process."""
    key = (
        cfg.detect.backend,
        cfg.detect.min_confidence,
        cfg.detect.min_face_frac,
        cfg.detect.embeddings,
    )
    if key not in _BACKENDS:
        _BACKENDS[key] = make_backend(cfg.detect)
    return _BACKENDS[key]


def _count(work: VideoWork, stage: str, n: int, frames: int) -> None:
    fps = work.source.fps if work.source is not None else 1.0
    work.funnel[stage] = [n, round(frames / fps, 3)]


def op_load(work: VideoWork, cfg: PrepConfig) -> None:
    work.source = load_source(work.path, cfg.input)
    if work.source.audio is None:
        raise BadInput("no_audio", f"{work.path} has no audio track")
    _count(work, "decoded", 1, work.source.num_frames)


def op_shots(work: VideoWork, cfg: PrepConfig) -> None:
    src = work.source
    work.shots = split_shots(src.frames, src.fps, cfg.shots)
    _count(work, "shots", len(work.shots), src.num_frames)
    ok = [s for s in work.shots if s.verdict == "keep"]
    _count(work, "long_enough", len(ok), sum(s.length for s in ok))


def op_detect(work: VideoWork, cfg: PrepConfig) -> None:
    backend = backend_for(cfg)
    for s in work.shots:
        faces = [backend.detect(f) for f in work.source.frames[s.start : s.end]]
        work.tracks[s.index] = track_shot(faces, s.start, cfg.detect)


def op_filters(work: VideoWork, cfg: PrepConfig) -> None:
    src = work.source
    for s in work.shots:
        if s.verdict == "too_short":
            s.verdict = _short_shot_reason(work, s, cfg)
            continue
        if s.verdict != "keep":
            continue
        reason, scores, people = judge_shot(
            src.frames[s.start : s.end],
            work.tracks[s.index],
            src.audio is not None,
            cfg.filters,
            cfg.detect,
            src.fps,
        )
        s.scores = scores
        if reason is not None:
            s.verdict = reason
        else:
            work.people[s.index] = people
    ok = [s for s in work.shots if s.verdict == "keep"]
    _count(work, "filtered", len(ok), sum(s.length for s in ok))


#: Defects read reliably from any piece of a shot (logo and flicker detection need a long
#: shot): they name a drop better than its length does.
CONTENT_DEFECTS = ("blur", "subtitles", "pip")


def _short_shot_reason(work: VideoWork, s: ShotSpan, cfg: PrepConfig) -> str:
    """Why a shot under the minimum length is dropped: its visible defect, emptiness, or length.

    A spurious cut can split a subtitled or blurred shot into pieces under 3 s; reporting the
    defect keeps the funnel's reasons truthful.
    """
    frames = work.source.frames[s.start : s.end]
    if s.length >= 6:
        reason, _, _ = judge_shot(
            frames, work.tracks[s.index], True, cfg.filters, cfg.detect, work.source.fps
        )
        if reason in CONTENT_DEFECTS:
            return reason
    if (
        not people_in_shot(work.tracks[s.index], s.length, cfg.detect)
        and sharpness(_analysis(frames)[0]) >= cfg.filters.min_sharpness
    ):
        return "no_person"  # a sharp empty shot is empty, whatever its length
    return "too_short"


def _same(a: np.ndarray | None, b: np.ndarray | None, threshold: float) -> bool:
    """Whether two identity descriptors belong to one person (cosine similarity)."""
    if a is None or b is None:
        return False
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return bool(na > 0 and nb > 0 and float(a @ b) / (na * nb) > threshold)


def op_tracks(work: VideoWork, cfg: PrepConfig) -> None:
    """Group tracks into people (across shots) and plan one clip per person track."""
    persons: list[np.ndarray | None] = []
    usable = {s.index for s in work.shots if s.verdict in ("keep", "too_short")}
    for s in work.shots:
        if s.index not in usable:
            continue
        for t in work.tracks[s.index]:
            if t.detected.sum() < 0.3 * t.n:
                continue
            sim = cfg.detect.same_person_similarity
            match = next((k for k, f in enumerate(persons) if _same(f, t.feature, sim)), None)
            if match is None:
                persons.append(t.feature)
                match = len(persons) - 1
            work.person_of[(s.index, t.id)] = match
    n = 0
    for sidx, people in work.people.items():
        for t in people:
            person = work.person_of.get((sidx, t.id), len(persons) + t.id)
            work.clips.append(
                ClipPlan(
                    track=t,
                    shot=sidx,
                    person=person,
                    codes=np.zeros(0, np.int8),
                    speech=np.zeros(0, bool),
                )
            )
            n += t.n
    _count(work, "tracks", len(work.clips), n)


def _runs(valid: np.ndarray, fill: int) -> list[tuple[int, int]]:
    """[a, b) runs of valid frames, bridging invalid gaps shorter than `fill` frames."""
    v = valid.copy()
    d = np.diff(np.r_[1, v.astype(np.int8), 1])
    for a, b in zip(np.nonzero(d == -1)[0], np.nonzero(d == 1)[0], strict=True):
        if b - a < fill and a > 0 and b < len(v):
            v[a:b] = True
    d = np.diff(np.r_[0, v.astype(np.int8), 0])
    return list(zip(np.nonzero(d == 1)[0].tolist(), np.nonzero(d == -1)[0].tolist(), strict=True))


def op_labels(work: VideoWork, cfg: PrepConfig) -> None:
    """Per-frame states by the decision table, re-ranked per shot, cut into clips."""
    src, lc, fps = work.source, cfg.labels, work.source.fps
    work.speech = L.speech_frames(src.audio, src.sample_rate, fps, src.num_frames, lc)
    work.envelope = L.envelope(src.audio, src.sample_rate, fps, src.num_frames)
    planned, work.clips = work.clips, []
    by_shot: dict[int, list[ClipPlan]] = {}
    for c in planned:
        by_shot.setdefault(c.shot, []).append(c)
    for shot, plans in by_shot.items():
        codes, syncs = [], []
        for c in plans:
            t = c.track
            sp, env = work.speech[t.start : t.end], work.envelope[t.start : t.end]
            code, sync = L.decide(t.mouth, env, sp, fps, lc)
            lag, peak = L.av_offset(
                t.mouth,
                env,
                sp & (code != L.LISTEN),
                cfg.filters.max_av_offset_frames + round(0.3 * fps),
            )
            c.extra = {"av_lag_frames": lag, "av_peak": round(peak, 3)}
            if abs(lag) > cfg.filters.max_av_offset_frames and peak > 0.3:
                c.verdict = "out_of_sync"
            codes.append(code)
            syncs.append(sync)
        _rerank_overlap(plans, codes, syncs, lc)
        for c, code in zip(plans, codes, strict=True):
            if c.verdict != "keep":
                work.clips.append(c)
                continue
            code = L.smooth(code, fps, lc, work.speech[c.track.start : c.track.end])
            for a, b in _runs(code != L.DISCARD, round(0.5 * fps)):
                for a2 in range(a, b, max(1, round(cfg.clips.max_seconds * fps))):
                    b2 = min(b, a2 + round(cfg.clips.max_seconds * fps))
                    if b2 - a2 < cfg.clips.min_seconds * fps:
                        continue
                    part = code[a2:b2].copy()
                    bad = part == L.DISCARD
                    if bad.mean() > lc.max_discard_frac:
                        continue
                    part = _nearest_fill(part, ~bad)  # bridged blips: persistence
                    t = c.track.slice(c.track.start + a2, c.track.start + b2)
                    work.clips.append(
                        ClipPlan(
                            track=t,
                            shot=shot,
                            person=c.person,
                            codes=part,
                            speech=work.speech[t.start : t.end],
                            extra=dict(c.extra),
                        )
                    )
    ok = [c for c in work.clips if c.verdict == "keep"]
    _count(work, "labelled", len(ok), sum(c.track.n for c in ok))


def _nearest_fill(codes: np.ndarray, ok: np.ndarray) -> np.ndarray:
    """Frames where `ok` is False take the code of the nearest frame where it is True."""
    if ok.all() or not ok.any():
        return codes
    good = np.nonzero(ok)[0]
    pos = np.searchsorted(good, np.arange(len(codes)))
    left = good[np.clip(pos - 1, 0, len(good) - 1)]
    right = good[np.clip(pos, 0, len(good) - 1)]
    idx = np.arange(len(codes))
    near = np.where(np.abs(idx - left) <= np.abs(right - idx), left, right)
    return codes[near]


def _rerank_overlap(plans, codes, syncs, lc) -> None:
    """Re-rank simultaneous speakers over the frames two tracks share."""
    for i in range(len(plans)):
        for j in range(i + 1, len(plans)):
            ti, tj = plans[i].track, plans[j].track
            a, b = max(ti.start, tj.start), min(ti.end, tj.end)
            if b <= a:
                continue
            ci, cj = codes[i][a - ti.start : b - ti.start], codes[j][a - tj.start : b - tj.start]
            si, sj = syncs[i][a - ti.start : b - ti.start], syncs[j][a - tj.start : b - tj.start]
            L.rerank([ci, cj], [si, sj], lc)


OPS = {
    "load": op_load,
    "shots": op_shots,
    "detect": op_detect,
    "filters": op_filters,
    "tracks": op_tracks,
    "labels": op_labels,
}


def clip_name(source_id: str, clip: ClipPlan) -> str:
    """Deterministic clip directory name."""
    key = f"{source_id}:{clip.shot}:{clip.track.id}:{clip.track.start}:{clip.track.end}"
    return (
        f"{source_id}-{clip.shot:03d}-{clip.track.start:06d}-"
        + hashlib.blake2b(key.encode(), digest_size=3).hexdigest()
    )


def process_video(path: Path, cfg: PrepConfig, out: Path | None = None) -> dict:
    """Run the chain on one source; returns its report (never raises for bad input)."""
    from lpm.data.prep.write import op_audio_semantics_refs_write

    work = VideoWork(path=Path(path))
    work.funnel["input"] = [1, 0.0]
    report: dict = {"path": str(path), "status": "ok"}
    try:
        for name in ORDER:
            if name in OPS:
                OPS[name](work, cfg)
            if name == "load":
                work.funnel["input"][1] = round(work.source.seconds, 3)
                report["source_id"] = work.source.id
            if name == cfg.until:
                break
        if ORDER.index(cfg.until) >= ORDER.index("audio"):
            op_audio_semantics_refs_write(work, cfg, out)
    except BadInput as err:
        report.update(status="skipped", reason=err.reason, detail=err.detail)
        log.warning("skipped %s: %s", path, err)
    report["shots"] = [s.to_dict() for s in work.shots]
    report["clips_dropped"] = [
        {
            "shot": c.shot,
            "start_frame": c.track.start,
            "end_frame": c.track.end,
            "reason": c.verdict,
        }
        for c in work.clips
        if c.verdict != "keep"
    ]
    report["entries"] = work.entries
    report["funnel"] = work.funnel
    return report
