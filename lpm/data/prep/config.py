"""Typed configuration of the real-footage pipeline, one dataclass per stage.

Every threshold the stages use lives here, with its unit. `PrepConfig.from_dict` builds the
whole tree from a (JSON) dict, so a run can be configured from a file and its resolved config is
written next to its outputs (`prep_config.json`).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

from lpm.data.stage.schema import DEFAULT_FPS, DEFAULT_SAMPLE_RATE, SPLITS

DETECTORS = ("mediapipe", "dlib", "stage")
"""Face detector backends: the real detectors (default `mediapipe`) and the Stage-world one."""
VADS = ("silero", "energy")
"""Voice activity backends: silero-vad (default) or a plain energy gate."""
ORDER = (
    "load",
    "shots",
    "detect",
    "filters",
    "tracks",
    "labels",
    "audio",
    "semantics",
    "references",
    "write",
)
"""The per-video operators in the order the pipeline chains them."""


def _check(cond: bool, name: str, msg: str) -> None:
    if not cond:
        raise ValueError(f"{name} {msg}")


@dataclass(kw_only=True)
class InputConfig:
    """Reading source videos."""

    max_side: int = 640
    """Frames are decoded down to at most this many pixels on the longer side."""
    max_source_pixels: int = 4096 * 2304
    """Sources with more pixels per frame than this are skipped (`huge_resolution`)."""
    max_seconds: float = 1800.0
    """Sources longer than this (seconds) are skipped: split them first."""
    sample_rate: int = DEFAULT_SAMPLE_RATE
    """Audio is resampled to this rate (Hz)."""

    def __post_init__(self) -> None:
        _check(self.max_side >= 32, "input.max_side", f"must be >= 32, got {self.max_side}")
        _check(self.max_source_pixels > 0, "input.max_source_pixels", "must be positive")
        _check(self.max_seconds > 0, "input.max_seconds", "must be positive")
        _check(self.sample_rate == 16_000, "input.sample_rate", "must be 16000 (the VAD's rate)")


@dataclass(kw_only=True)
class ShotConfig:
    """Shot-boundary detection: PySceneDetect's content score, cut at isolated peaks."""

    cut_ratio: float = 3.0
    """A cut needs a content score this many times the median of the surrounding frames."""
    min_content_val: float = 6.0
    """...and at least this absolute content score (PySceneDetect units, 0..255)."""
    ignore_bottom: float = 0.2
    """Fraction of the frame height at the bottom left out of the score (burnt-in subtitles
    change at sentence boundaries and would read as cuts)."""
    min_shot_seconds: float = 3.0
    """Shots shorter than this (seconds) are dropped (`too_short`)."""

    def __post_init__(self) -> None:
        _check(self.cut_ratio > 1, "shots.cut_ratio", "must be > 1")
        _check(0 <= self.ignore_bottom < 0.9, "shots.ignore_bottom", "must be in [0, 0.9)")
        _check(self.min_shot_seconds > 0, "shots.min_shot_seconds", "must be positive")


@dataclass(kw_only=True)
class DetectConfig:
    """Face detection and tracking."""

    backend: str = "mediapipe"
    """One of `DETECTORS`: `mediapipe` or `dlib` for real footage, `stage` for Stage renders."""
    min_confidence: float = 0.5
    """Detector score below which a detection is ignored."""
    min_face_frac: float = 0.06
    """Faces narrower than this fraction of the frame's shorter side are ignored."""
    iou_match: float = 0.3
    """A detection continues a track when their boxes overlap at least this much (IoU)."""
    max_gap_frames: int = 8
    """A track survives this many frames without a detection (gaps are interpolated)."""
    presence_frac: float = 0.6
    """A track counts as a person of the shot when it covers this fraction of its frames."""
    same_person_similarity: float = 0.9
    """Cosine similarity of two tracks' identity descriptors above which they are one person."""
    embeddings: bool = False
    """Compute dlib's 128-d face embeddings (slower) to re-identify people across shots."""

    def __post_init__(self) -> None:
        _check(self.backend in DETECTORS, "detect.backend", f"must be one of {DETECTORS}")
        _check(0 < self.min_confidence < 1, "detect.min_confidence", "must be in (0, 1)")
        _check(0 < self.iou_match < 1, "detect.iou_match", "must be in (0, 1)")
        _check(self.max_gap_frames >= 0, "detect.max_gap_frames", "must be >= 0")
        _check(0 < self.presence_frac <= 1, "detect.presence_frac", "must be in (0, 1]")


@dataclass(kw_only=True)
class FilterConfig:
    """Shot filters; each rejects with its own reason."""

    max_people: int = 2
    """More simultaneous people than this rejects the shot (`too_many_people`)."""
    min_sharpness: float = 0.45
    """Edge steepness (gradient over local contrast, 0..1, at 128 px) below this is `blur`."""
    max_colour_cast: float = 2.0
    """Mean chroma offset over chroma spread (Lab) above this is `colour_cast`."""
    max_flicker: float = 0.02
    """Std of the high-passed mean luma (0..1) above this is `flicker`."""
    max_subtitle_score: float = 0.012
    """Fraction of outlined-text pixels in the bottom band above this is `subtitles`."""
    max_logo_score: float = 0.03
    """The largest compact static mark wholly inside one corner box (its edge pixels over the
    box's pixels), minus the median corner's, above this is `logo`."""
    logo_corner: float = 0.25
    """A logo's corner box spans this fraction of the frame's width and height."""
    pip_min_area: float = 0.03
    """A static rectangle covering between this and `pip_max_area` of the frame is `pip`."""
    pip_max_area: float = 0.45
    pip_window_s: float = 3.0
    """An inset is also looked for in consecutive windows of this length (seconds) of a shot
    at least twice as long: one that comes in or goes during the shot is static only there."""
    pip_side_slack: float = 0.03
    """An inset's vertical sides are looked for this far (fraction of the shorter side) around
    the ends of its top and bottom edges, which stop short at a weak corner."""
    max_cut_frac: float = 0.2
    """A track whose face box touches the frame border on more frames than this is
    `incomplete_framing`."""
    min_face_px: float = 48.0
    """Faces narrower than this (pixels of the decoded frame, median over the track) are too
    small to read lips from: `face_too_small`."""
    max_av_offset_frames: int = 3
    """A clear lip/audio lag beyond this many frames is `out_of_sync`."""

    def __post_init__(self) -> None:
        _check(self.max_people >= 1, "filters.max_people", "must be >= 1")
        _check(self.min_sharpness >= 0, "filters.min_sharpness", "must be >= 0")
        _check(0 < self.pip_min_area < self.pip_max_area < 1, "filters.pip_min_area", "< max")
        _check(self.pip_window_s > 0, "filters.pip_window_s", "must be positive")
        _check(0 <= self.pip_side_slack < 0.5, "filters.pip_side_slack", "must be in [0, 0.5)")
        _check(0 < self.logo_corner <= 0.5, "filters.logo_corner", "must be in (0, 0.5]")
        _check(0 <= self.max_cut_frac <= 1, "filters.max_cut_frac", "must be in [0, 1]")
        _check(self.max_av_offset_frames >= 0, "filters.max_av_offset_frames", "must be >= 0")


@dataclass(kw_only=True)
class LabelConfig:
    """Three-state labelling (speak / listen / idle) by the decision table of DESIGN §5."""

    vad: str = "silero"
    """Voice activity backend, one of `VADS`."""
    vad_threshold: float = 0.5
    """Speech probability above which a 32-ms VAD window is speech."""
    vad_min_silence_ms: int = 150
    """Pauses shorter than this (ms) stay inside a speech segment."""
    vad_end_lag_ms: int = 40
    """silero-vad ends a segment this late (ms; median over speech in Stage training scenes):
    its speech probability decays over a few 32-ms windows after the voice stops. silero's
    segment ends are moved back by it; onsets are on time (segments are not padded)."""
    speech_edge_guard_s: float = 0.1
    """Mouth motion in the silence this close (seconds) to speech is not counted: lips move
    before the voice starts and close after it stops (not a sign of silent mouthing)."""
    highpass_s: float = 0.3
    """Mouth opening and loudness lose their moving average over this window (seconds)
    before motion and sync are measured, so slow expression changes do not read as speech."""
    motion_window_s: float = 0.3
    """Mouth motion is the std of mouth opening over this window (seconds)."""
    motion_threshold: float = 0.04
    """Mouth moves when its windowed std exceeds this (mouth-opening units, ~0..1)."""
    sync_window_s: float = 1.0
    """Sync is correlated over windows of this length (seconds)."""
    sync_threshold: float = 0.3
    """Best-lag correlation of mouth and audio envelope above which the lips are in sync."""
    max_lag_frames: int = 3
    """Lags searched for the sync correlation (frames, both ways)."""
    both_speak_sync: float = 0.55
    """Two people both keep `speak` on a frame only when both sync scores exceed this."""
    smooth_s: float = 0.3
    """Median-filter length of the per-frame states (seconds)."""
    min_run_s: float = 0.25
    """State runs shorter than this (seconds) are merged into their neighbours."""
    max_discard_frac: float = 0.3
    """Clips with a larger fraction of inconsistent (discarded) frames are dropped."""
    asd: str = "rule"
    """Active-speaker backend: `rule` (the decision table) or `module:callable` of a model."""

    def __post_init__(self) -> None:
        _check(self.vad in VADS, "labels.vad", f"must be one of {VADS}")
        _check(0 < self.vad_threshold < 1, "labels.vad_threshold", "must be in (0, 1)")
        _check(self.vad_end_lag_ms >= 0, "labels.vad_end_lag_ms", "must be >= 0")
        _check(self.speech_edge_guard_s >= 0, "labels.speech_edge_guard_s", "must be >= 0")
        _check(self.motion_window_s > 0, "labels.motion_window_s", "must be positive")
        _check(self.sync_window_s > 0, "labels.sync_window_s", "must be positive")
        _check(self.max_lag_frames >= 0, "labels.max_lag_frames", "must be >= 0")
        _check(0 <= self.max_discard_frac <= 1, "labels.max_discard_frac", "must be in [0, 1]")


@dataclass(kw_only=True)
class ClipConfig:
    """Cutting single-person clips out of tracks."""

    resolution: int = 128
    """Output clip frames are this many pixels square (even)."""
    crop_scale: float = 2.6
    """The crop is this many face widths wide (clamped to the frame)."""
    min_seconds: float = 3.0
    """Shorter clips are dropped (seconds)."""
    max_seconds: float = 10.0
    """Longer runs are cut into clips of at most this length (seconds)."""
    fps: int = DEFAULT_FPS
    """Frame rate the output clips are written at (sources at another rate are resampled)."""
    split: str = "train"
    """Split recorded in the clips' metadata."""

    def __post_init__(self) -> None:
        _check(self.resolution >= 32 and self.resolution % 2 == 0, "clips.resolution", "even>=32")
        _check(self.crop_scale >= 1, "clips.crop_scale", "must be >= 1")
        _check(0 < self.min_seconds <= self.max_seconds, "clips.min_seconds", "<= max_seconds")
        _check(1 <= self.fps <= 120, "clips.fps", "must be in [1, 120]")
        _check(self.split in SPLITS, "clips.split", f"must be one of {SPLITS}")


@dataclass(kw_only=True)
class SemanticConfig:
    """Captions and the six-class semantic verifier."""

    captioner: str = "rule"
    """`rule` (labels and tags) or `module:callable` of a local captioning model."""
    verifier: str = "rule"
    """`rule` or `module:callable` returning one of `semantics.CLASSES`."""
    dense_frames: int = 125
    """Dense captions cover consecutive windows of this many frames."""
    drop_unknown: bool = True
    """Drop clips the verifier calls `Unknown`."""


@dataclass(kw_only=True)
class ReferenceConfig:
    """Reference images: global frames, body views, expressions."""

    pose: str = "landmarks"
    """`landmarks` (face yaw from landmarks) or `module:callable` giving the body angle θ."""
    front_min_deg: float = 155.0
    """θ (body facing vs camera, degrees) at or above which the view is `front`."""
    back_max_deg: float = 45.0
    """θ at or below which the view is `back`; left/right profile in between."""
    expression_clusters: int = 4
    """k of the k-means over face crops that finds distinct expressions."""
    min_expressions: int = 2
    """Sources need at least this many distinct expressions for expression references."""
    expression_distance: float = 0.08
    """Cluster centres closer than this (mean abs pixel, 0..1) are the same expression."""

    def __post_init__(self) -> None:
        _check(0 <= self.back_max_deg < self.front_min_deg <= 180, "references.back_max_deg", "<")
        _check(self.expression_clusters >= 1, "references.expression_clusters", "must be >= 1")


@dataclass(kw_only=True)
class RebalanceConfig:
    """Listener rebalancing: resample listening clips to a target tag mix."""

    target_expressive: float = 0.5
    """Wanted fraction of expressive listening clips after resampling."""
    seed: int = 0
    """Seed of the resampling draw."""

    def __post_init__(self) -> None:
        _check(0 <= self.target_expressive <= 1, "rebalance.target_expressive", "in [0, 1]")


@dataclass(kw_only=True)
class PrepConfig:
    """The whole pipeline."""

    input: InputConfig = field(default_factory=InputConfig)
    shots: ShotConfig = field(default_factory=ShotConfig)
    detect: DetectConfig = field(default_factory=DetectConfig)
    filters: FilterConfig = field(default_factory=FilterConfig)
    labels: LabelConfig = field(default_factory=LabelConfig)
    clips: ClipConfig = field(default_factory=ClipConfig)
    semantics: SemanticConfig = field(default_factory=SemanticConfig)
    references: ReferenceConfig = field(default_factory=ReferenceConfig)
    rebalance: RebalanceConfig = field(default_factory=RebalanceConfig)
    until: str = "write"
    """Stop after this operator (one of `ORDER`); the per-video report still records it."""

    def __post_init__(self) -> None:
        _check(self.until in ORDER, "until", f"must be one of {ORDER}, got {self.until!r}")

    @classmethod
    def from_dict(cls, d: dict) -> PrepConfig:
        """Build from a nested dict (unknown keys raise a `ValueError` naming them)."""
        kinds = {f.name: f for f in fields(cls)}
        unknown = sorted(set(d) - set(kinds))
        if unknown:
            raise ValueError(f"unknown prep config sections: {unknown}; known: {sorted(kinds)}")
        kw = {}
        for name, value in d.items():
            sub = {
                "input": InputConfig,
                "shots": ShotConfig,
                "detect": DetectConfig,
                "filters": FilterConfig,
                "labels": LabelConfig,
                "clips": ClipConfig,
                "semantics": SemanticConfig,
                "references": ReferenceConfig,
                "rebalance": RebalanceConfig,
            }.get(name)
            if sub is None:
                kw[name] = value
                continue
            known = {f.name for f in fields(sub)}
            bad = sorted(set(value) - known)
            if bad:
                raise ValueError(f"unknown fields in prep config section {name!r}: {bad}")
            kw[name] = sub(**value)
        return cls(**kw)

    def to_dict(self) -> dict:
        """JSON-ready nested dict."""
        return asdict(self)


def stage_config(**sections) -> PrepConfig:
    """The configuration for Stage renders: the Stage face detector, everything else default."""
    d = {"detect": {"backend": "stage"}}
    for k, v in sections.items():
        d.setdefault(k, {}).update(v) if isinstance(v, dict) else d.__setitem__(k, v)
    return PrepConfig.from_dict(d)


def resolve_out(path: str | Path) -> Path:
    """The output directory as a Path (created by the runner)."""
    return Path(path)
