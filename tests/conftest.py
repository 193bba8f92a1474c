"""Shared test set-up: offline hub, seeded RNG, GPU tests skipped without CUDA."""

from __future__ import annotations

import os

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
# Commands default to a GPU where there is one (`--device auto`); the tests compare against CPU
# results, so they run on the CPU unless a test names a GPU (the `gpu`-marked ones).
os.environ.setdefault("LPM_DEVICE", "cpu")

import pytest  # noqa: E402
import torch  # noqa: E402


def pytest_collection_modifyitems(config, items):
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA device")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
