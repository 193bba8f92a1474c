"""Shared fixtures: one small held-out Stage raw scene, cleaned once by the pipeline."""

from __future__ import annotations

import importlib.util

import pytest

from lpm.data.stage.writer import StageDatasetConfig, build_dataset


def has(*modules: str) -> bool:
    return all(importlib.util.find_spec(m) is not None for m in modules)


needs_stage_detector = pytest.mark.skipif(
    not has("dlib", "scenedetect"), reason="needs dlib-bin and scenedetect-headless (prep extra)"
)
needs_silero = pytest.mark.skipif(
    not has("silero_vad", "onnxruntime"), reason="needs silero-vad and onnxruntime (prep extra)"
)


@pytest.fixture(scope="session")
def raw_scenes(tmp_path_factory):
    """Two held-out raw scenes, 128 px, 24 s (never seen while calibrating)."""
    out = tmp_path_factory.mktemp("raw")
    cfg = StageDatasetConfig(
        out=out, clips=2, seconds=24.0, resolution=128, seed=2024, raw=True, split="heldout"
    )
    build_dataset(cfg, progress=False)
    return out


@pytest.fixture(scope="session")
def prepped(raw_scenes, tmp_path_factory):
    """The pipeline's output on `raw_scenes` (Stage detector, silero VAD)."""
    if not has("dlib", "scenedetect", "silero_vad", "onnxruntime"):
        pytest.skip("needs the prep extra (dlib-bin, scenedetect-headless, silero-vad)")
    from lpm.data.prep.config import stage_config
    from lpm.data.prep.runner import run_local

    out = tmp_path_factory.mktemp("prep")
    summary = run_local(raw_scenes, out, stage_config(), workers=1, progress=False)
    return out, summary
