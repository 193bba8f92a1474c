"""Score one video of one case: readings -> every automatic metric, stored as JSON + NPZ.

A `CaseScore` holds the per-case metrics and dimension scores, the per-second identity
similarity (for drift plots of long cases), the instruction checks and a subsample of the
visual features (the Fréchet distance is computed over a whole subset or suite, not per case).
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from lpm.bench.backends import Backend, Readings, iter_video, read_all
from lpm.bench.materialize import CaseInputs
from lpm.bench.metrics import (
    dimension_scores,
    identity_metrics,
    identity_series,
    motion_metrics,
    motion_stats,
    own_speech,
    per_second,
    sync_metrics,
    text_metrics,
    text_results,
    truth_mouth_metrics,
)

FEATURE_SAMPLES = 96
"""Visual feature vectors kept per case (evenly spaced frames) for the Fréchet distance."""
SCORE_VERSION = "lpm-bench-score/1"
SYNCNET_METRICS = ("syncnet_offset", "syncnet_confidence", "syncnet_min_dist")
"""SyncNet's outputs: AV offset (25-fps frames, > 0: audio leads), confidence, min distance."""


@dataclass(kw_only=True)
class CaseScore:
    """All automatic results of one system on one case."""

    case_id: str
    subset: str
    system: str
    duration_s: float
    metrics: dict[str, float | None]
    dims: dict[str, float | None]
    id_per_second: list[float] = field(default_factory=list)
    """Identity similarity averaged per second of video."""
    instructions: list[dict] = field(default_factory=list)
    tags: dict[str, list[str]] = field(default_factory=dict)
    features: np.ndarray | None = None
    """(K, F) sampled visual features (stored beside the JSON as NPZ)."""

    def save(self, path: Path) -> None:
        """Write `<path>.json` (and `<path>.npz` with the features)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        d = asdict(self)
        d.pop("features")
        d["version"] = SCORE_VERSION
        if self.features is not None:
            np.savez_compressed(path.with_suffix(".npz"), features=self.features)
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(d, indent=1))
        tmp.replace(path.with_suffix(".json"))

    @classmethod
    def load(cls, path: Path) -> CaseScore:
        d = json.loads(path.with_suffix(".json").read_text())
        d.pop("version", None)
        npz = path.with_suffix(".npz")
        feats = np.load(npz)["features"] if npz.is_file() else None
        return cls(**d, features=feats)


def sample_features(r: Readings, k: int = FEATURE_SAMPLES) -> np.ndarray | None:
    if r.features is None:
        return None
    idx = np.unique(
        np.linspace(0, len(r.features) - 1, min(k, len(r.features))).round().astype(int)
    )
    return r.features[idx].astype(np.float32)


def reference_embeddings(backend: Backend, inputs: CaseInputs) -> np.ndarray | None:
    """Identity embeddings of the case's first frame and its global/body-front references."""
    imgs = [inputs.first_frame] + [
        img
        for r, img in inputs.references
        if r.kind == "global" or (r.kind, r.subtype) == ("body", "front")
    ]
    size = inputs.first_frame.shape[:2]
    imgs = [i for i in imgs if i.shape[:2] == size]
    return backend.embed(np.stack(imgs))


def score_readings(
    r: Readings,
    inputs: CaseInputs,
    *,
    system: str,
    ref_emb: np.ndarray | None,
    truth_stats: dict | None,
    fps: float,
    extra: dict[str, float | None] | None = None,
) -> CaseScore:
    """Every per-case metric from a video's readings (see `lpm.bench.metrics`); `extra` adds
    metrics computed outside the readings (`syncnet_metrics`)."""
    case = inputs.case
    m: dict[str, float | None] = {}
    m.update(sync_metrics(r, inputs.speak, inputs.listen, inputs.sample_rate, fps))
    m.update(extra or {})
    m.update(truth_mouth_metrics(r, inputs.truth_labels))
    series = identity_series(r, ref_emb)
    m.update(identity_metrics(series, fps))
    m.update(motion_metrics(motion_stats(r, fps), truth_stats))
    results = text_results(r, case.instructions, fps)
    m.update(text_metrics(results))
    dims = dimension_scores(m)
    return CaseScore(
        case_id=case.id,
        subset=case.subset,
        system=system,
        duration_s=r.num_frames / fps,
        metrics={k: v for k, v in m.items() if not k.startswith("_")},
        dims=dims,
        id_per_second=[]
        if series is None
        else [round(float(x), 4) for x in per_second(series, fps)],
        instructions=[asdict(x) for x in results],
        tags={k: list(v) for k, v in asdict(case.tags).items()},
        features=sample_features(r),
    )


def syncnet_metrics(
    backend: Backend, video: Path, r: Readings, inputs: CaseInputs, fps: float
) -> dict[str, float | None]:
    """SyncNet's outputs for a video (read again, at `fps`) against the case's speak track
    (`lpm.bench.avsync`).

    n/a (None) without a SyncNet scorer, without face boxes, when the performer speaks for less
    than 0.5 s, or when no face was found.
    """
    out: dict[str, float | None] = dict.fromkeys(SYNCNET_METRICS)
    if backend.syncnet is None or r.face_box is None:
        return out
    if not own_speech(inputs.speak, inputs.sample_rate, fps, len(r.face_box)):
        return out
    chunks, _ = iter_video(video)
    res = backend.syncnet.score(chunks, fps, r.face_box, inputs.speak, inputs.sample_rate)
    if res is not None:
        out.update(
            syncnet_offset=float(res.offset),
            syncnet_confidence=res.confidence,
            syncnet_min_dist=res.min_dist,
        )
    return out


def truth_readings(backend: Backend, inputs: CaseInputs, case_dir: Path) -> Readings | None:
    """Readings of the case's ground truth, cached in `case_dir/truth_<backend>.npz`."""
    if inputs.truth_frames is None:
        return None
    cache = Path(case_dir) / f"truth_{backend.name}.npz"
    if cache.is_file():
        data = np.load(cache)
        return Readings(**{k: data[k] for k in data.files})
    r = read_all(backend, inputs.truth_frames, inputs.case.fps)
    np.savez_compressed(cache, **{k: v for k, v in asdict(r).items() if v is not None})
    return r
