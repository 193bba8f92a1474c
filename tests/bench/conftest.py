"""Shared fixtures of the LPM-Bench tests: a rendered Stage case, tiny model and probes."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

from lpm.bench.materialize import materialize
from lpm.bench.suites import stage_case

TESTS = Path(__file__).resolve().parents[1]


def load_tiny_bundle(text_cues: bool = False):
    """`tiny_bundle()` of the inference tests (a tiny random model bundle)."""
    spec = importlib.util.spec_from_file_location(
        "_bench_tiny_pipeline", TESTS / "inference" / "test_pipeline.py"
    )
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod.tiny_bundle(decoder="light", text_cues=text_cues)


def random_probes():
    """Randomly initialised Stage probes (plumbing only; their readings mean nothing)."""
    import torch

    from lpm.bench.probes import ProbeConfig, StageProbes
    from lpm.bench.probes.model import ActionProbeNet, FrameProbeNet

    torch.manual_seed(0)
    cfg = ProbeConfig()
    return StageProbes(FrameProbeNet(cfg), ActionProbeNet(cfg))


@pytest.fixture(scope="session")
def conversation_inputs(tmp_path_factory):
    """A materialised 8-s held-out Stage conversation (inputs + ground truth + labels)."""
    case = stage_case(11, 6, "conversation", size=64)
    from lpm.bench.suites import _with_duration

    case = _with_duration(case, 8.0)
    return materialize(case, Path("."), tmp_path_factory.mktemp("case"))


@pytest.fixture(scope="session")
def bundle_dir(tmp_path_factory):
    d = tmp_path_factory.mktemp("bundle") / "tiny-model"
    load_tiny_bundle().save(d)
    return d
