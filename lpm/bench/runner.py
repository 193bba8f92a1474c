"""`lpm bench run`: materialise every case, generate (or take) a video per case, score it.

Output directory layout (every step is skipped when its output exists, so a killed run resumes):

    OUT/run.json                              suite, systems, settings, git revision
    OUT/cases/<case>/inputs/...               materialised inputs (+ ground truth)
    OUT/cases/<case>/truth_<backend>.npz      cached readings of the ground truth
    OUT/systems/<system>/videos/<case>.mp4    generated videos (models run here)
    OUT/systems/<system>/scores/<case>.json   per-case metrics (+ .npz visual features)

Systems: a model bundle (`--model DIR`, generated offline here), a directory of videos made by
any other system (`--videos DIR`, files named `<case id>.mp4`), and, for suites with ground
truth, the ground truth itself (`ground-truth`, the ceiling).
"""

from __future__ import annotations

import json
import logging
import subprocess
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from lpm.bench.backends import Backend, iter_video, read_all
from lpm.bench.case import CaseSpec
from lpm.bench.materialize import CaseInputs, materialize
from lpm.bench.metrics import motion_stats
from lpm.bench.scoring import (
    CaseScore,
    reference_embeddings,
    score_readings,
    syncnet_metrics,
    truth_readings,
)
from lpm.bench.suites import load_suite
from lpm.device import resolve_device

if TYPE_CHECKING:
    from lpm.inference import ScriptSegment

log = logging.getLogger(__name__)

TRUTH_SYSTEM = "ground-truth"
"""System name of the ground-truth videos."""


@dataclass(frozen=True, kw_only=True)
class RunConfig:
    """Settings of one `lpm bench run`."""

    suite: str
    """Built-in suite name (`stage-mini`, `stage-1000`) or a suite file / directory."""
    out: Path
    """Output directory (shared by several systems; resumable)."""
    model: Path | None = None
    """Model bundle directory to generate with (None with `videos`)."""
    videos: Path | None = None
    """Directory of `<case id>.mp4` videos from another system."""
    system: str = ""
    """Name of the scored system (default: the model or video directory's name)."""
    online: bool = False
    """Generate with the streaming engine instead of offline generation."""
    duration_scale: float = 1.0
    """Multiplies built-in suite durations (a laptop-sized `stage-1000`)."""
    limit: int = 0
    """Run only the first `limit` cases (0: all)."""
    seed: int = 0
    """Sampling seed of generation."""
    steps: int | None = None
    """Denoising steps (default: the bundle's)."""
    with_truth: bool = True
    """Also score the ground-truth videos (when the suite has them)."""
    device: str = "cpu"
    """Where the model generates (``cpu``, ``cuda``, ``cuda:N``); the probes score on the CPU."""
    progress: bool = True

    def __post_init__(self) -> None:
        if self.online and self.model is None:
            raise ValueError("--online generates with a model: give --model ONLINE_BUNDLE")
        if (self.model is None) == (self.videos is None):
            raise ValueError(
                "give exactly one of --model DIR (generate) or --videos DIR (score "
                "videos made by another system)"
            )
        if self.videos is not None and not Path(self.videos).is_dir():
            raise ValueError(f"--videos {self.videos} is not a directory")
        if self.limit < 0:
            raise ValueError(f"limit must be >= 0, got {self.limit}")
        if self.steps is not None and self.steps < 1:
            raise ValueError(f"steps must be >= 1, got {self.steps}")
        if self.model is not None:
            resolve_device(self.device)
        if Path(self.out).exists() and not Path(self.out).is_dir():
            raise ValueError(f"--out {self.out} is a file; give a directory for the run")
        if self.system == TRUTH_SYSTEM:
            raise ValueError(f"system name {TRUTH_SYSTEM!r} is reserved for the ground truth")

    @property
    def system_name(self) -> str:
        src = self.model if self.model is not None else self.videos
        return self.system or Path(src).resolve().name


@dataclass(kw_only=True)
class RunSummary:
    out: Path
    suite: str
    systems: list[str]
    cases: int
    missing: list[str]
    seconds: float


def _git_revision() -> str:
    try:
        return (
            subprocess.run(
                ["git", "rev-parse", "HEAD"],
                capture_output=True,
                text=True,
                cwd=Path(__file__).parent,
                timeout=10,
            ).stdout.strip()
            or "unknown"
        )
    except (OSError, subprocess.SubprocessError):
        return "unknown"


def case_script(case: CaseSpec) -> list[ScriptSegment]:
    """The timed text prompts of a case (`ScriptSegment`s), cut at its end."""
    from lpm.inference import ScriptSegment

    return [
        ScriptSegment(start=i.start_s, end=min(i.end_s, case.duration_s), text=i.text)
        for i in case.instructions
        if i.start_s < case.duration_s
    ]


def _generate(
    pipeline, inputs: CaseInputs, path: Path, seed: int, steps: int | None, online: bool = False
) -> None:
    """Generate one case offline (``pipeline``: a `Pipeline`) or streamed (a `ModelBundle`)."""
    from lpm.config import BODY_VIEWS
    from lpm.data.stage.schema import EXPRESSIONS
    from lpm.inference import ReferenceImage

    case = inputs.case
    refs = [
        ReferenceImage(
            kind=r.kind,
            subtype=(
                BODY_VIEWS.index(r.subtype) if r.kind == "body" else EXPRESSIONS.index(r.subtype)
            ),
            image=img,
        )
        for r, img in inputs.references
        if r.kind in ("body", "expression")
    ]
    script = case_script(case)
    if online:
        from lpm.inference.streaming import generate_online

        video = generate_online(pipeline, inputs.first_frame, speak_audio=inputs.speak,
                                listen_audio=inputs.listen, seconds=case.duration_s,
                                script=script, references=refs, seed=seed)  # fmt: skip
    else:
        video = pipeline.generate(
            inputs.first_frame,
            speak_audio=inputs.speak,
            listen_audio=inputs.listen,
            script=script,
            references=refs,
            seconds=case.duration_s,
            seed=seed,
            steps=steps,
        )
    video.save(path)


def _load_backend(backend: Backend | None) -> Backend:
    if backend is not None:
        return backend
    from lpm.bench.backends import StageBackend

    return StageBackend()


def _score_video(
    backend: Backend,
    video: Path,
    inputs: CaseInputs,
    system: str,
    ref_emb,
    truth_stats: dict | None,
) -> CaseScore:
    chunks, fps = iter_video(video)
    r = read_all(backend, chunks, fps)
    sync = syncnet_metrics(backend, video, r, inputs, fps)
    return score_readings(
        r, inputs, system=system, ref_emb=ref_emb, truth_stats=truth_stats, fps=fps, extra=sync
    )


def run_suite(cfg: RunConfig, *, backend: Backend | None = None, pipeline=None) -> RunSummary:
    """Run `cfg` (see `RunConfig`); `backend` / `pipeline` override the defaults (tests)."""
    from tqdm import tqdm

    t0 = time.perf_counter()
    suite = load_suite(cfg.suite, duration_scale=cfg.duration_scale)
    cases = suite.cases[: cfg.limit] if cfg.limit else suite.cases
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    system = cfg.system_name
    backend = _load_backend(backend)
    if cfg.model is not None and pipeline is None and cfg.online:
        from lpm.inference import ModelBundle

        pipeline = ModelBundle.load(cfg.model, device=cfg.device)
        if pipeline.spec.online is None and pipeline.refiner is None:
            raise ValueError(
                f"--online needs an online bundle (a chunk-causal backbone + refiner); "
                f"{cfg.model} is an offline model: drop --online"
            )
    elif cfg.model is not None and pipeline is None:
        from lpm.inference import Pipeline

        pipeline = Pipeline.from_pretrained(cfg.model, device=cfg.device)
    _write_run_json(out, cfg, suite.name, system, backend.name, len(cases))
    missing: list[str] = []
    systems = {system}
    bar = tqdm(cases, desc=f"bench {suite.name} [{system}]", unit="case", disable=not cfg.progress)
    for case in bar:
        case_dir = out / "cases" / case.id
        bar.set_postfix_str(f"{case.id}: inputs")
        inputs = materialize(case, suite.root, case_dir)
        truth = truth_readings(backend, inputs, case_dir)
        truth_stats = motion_stats(truth, case.fps) if truth is not None else None
        ref_emb = None
        jobs: list[tuple[str, Path]] = []
        sys_dir = out / "systems" / system
        video = sys_dir / "videos" / f"{case.id}.mp4"
        if cfg.videos is not None:
            video = Path(cfg.videos) / f"{case.id}.mp4"
        jobs.append((system, video))
        if cfg.with_truth and truth is not None:
            jobs.append((TRUTH_SYSTEM, case_dir / "inputs" / "truth.mp4"))
        for name, path in jobs:
            score_path = out / "systems" / name / "scores" / case.id
            if score_path.with_suffix(".json").is_file():
                continue
            if name == system and cfg.model is not None and not path.is_file():
                bar.set_postfix_str(f"{case.id}: generating")
                path.parent.mkdir(parents=True, exist_ok=True)
                _generate(pipeline, inputs, path, cfg.seed, cfg.steps, cfg.online)
            if not path.is_file():
                missing.append(case.id)
                continue
            bar.set_postfix_str(f"{case.id}: scoring {name}")
            if ref_emb is None:
                ref_emb = reference_embeddings(backend, inputs)
            _score_video(backend, path, inputs, name, ref_emb, truth_stats).save(score_path)
            systems.add(name)
    if missing and len(missing) == len(cases):
        raise FileNotFoundError(
            f"no video found for any case (looked for <case id>.mp4 in "
            f"{cfg.videos}); first missing: {missing[:3]}"
        )
    return RunSummary(
        out=out,
        suite=suite.name,
        systems=sorted(systems),
        cases=len(cases),
        missing=missing,
        seconds=time.perf_counter() - t0,
    )


def _write_run_json(
    out: Path, cfg: RunConfig, suite: str, system: str, backend: str, n: int
) -> None:
    path = out / "run.json"
    run = json.loads(path.read_text()) if path.is_file() else {"systems": {}}
    if run.get("suite", suite) != suite:
        raise ValueError(
            f"{out} holds a run of suite {run['suite']!r}, not {suite!r}; use "
            "another --out directory"
        )
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in asdict(cfg).items()}
    run.update({"suite": suite, "backend": backend, "cases": n, "git_revision": _git_revision()})
    run["systems"][system] = settings
    path.write_text(json.dumps(run, indent=2) + "\n")


def load_scores(out: Path) -> dict[str, list[CaseScore]]:
    """Every stored score of a run directory: system -> list of `CaseScore`."""
    root = Path(out) / "systems"
    if not root.is_dir():
        raise FileNotFoundError(f"{out} holds no scores; run `lpm bench run --out {out}` first")
    res: dict[str, list[CaseScore]] = {}
    for sys_dir in sorted(p for p in root.iterdir() if p.is_dir()):
        files = sorted((sys_dir / "scores").glob("*.json"))
        if files:
            res[sys_dir.name] = [CaseScore.load(f.with_suffix("")) for f in files]
    if not res:
        raise FileNotFoundError(f"{out} holds no scores yet")
    return res


def truth_features(out: Path) -> dict[str, np.ndarray]:
    """Ground-truth visual features per case (sampled like the systems'), from the caches."""
    from lpm.bench.backends import Readings
    from lpm.bench.scoring import sample_features

    feats = {}
    for cache in sorted(Path(out).glob("cases/*/truth_*.npz")):
        data = np.load(cache)
        if "features" in data.files:
            feats[cache.parent.name] = sample_features(Readings(features=data["features"]))
    return feats
