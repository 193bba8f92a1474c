"""Shared fixtures of the distillation tests: the tiny recipe and its trajectory cache."""

from __future__ import annotations

import pytest
import torch

from lpm.distill.models import load_teacher
from lpm.distill.recipes import apply_overrides, get_recipe
from lpm.distill.trainer import build_dataset
from lpm.distill.trajectories import generate_trajectories

RECIPE = "test-tiny"


def tiny(*overrides: str):
    """The tiny distillation recipe (2 layers, width 32, 2 chunks of 2 latents on a 4x4 grid)."""
    return apply_overrides(get_recipe(RECIPE), list(overrides))


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models on a shared machine: one intra-op thread is ~10x faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def trajectories(tmp_path_factory, _one_thread):
    """A complete trajectory cache of the tiny recipe (all 8 clips, shards of 3)."""
    out = tmp_path_factory.mktemp("trajectories")
    recipe = tiny()
    teacher = load_teacher("", recipe.model_config(), seed=recipe.seed, device=torch.device("cpu"))
    generate_trajectories(recipe, teacher, build_dataset(recipe), out, shard_size=3)
    return out
