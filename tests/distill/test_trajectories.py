"""Teacher trajectories: recorded levels, batching independence, caching, resume, errors."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file
from typer.testing import CliRunner

from lpm.cli.main import app
from lpm.distill.models import load_teacher
from lpm.distill.trainer import build_dataset
from lpm.distill.trajectories import (
    TrajectoryCache,
    generate_trajectories,
    shard_path,
    solver_segments,
    teacher_trajectory,
)
from lpm.train.batch import mix_seed
from tests.distill.conftest import tiny


def test_solver_grid_is_split_at_the_recorded_levels():
    levels = (1.0, 0.75, 0.5, 0.0)
    segments = solver_segments(levels, steps=4, shift=3.0)
    assert [(s[0], s[-1]) for s in segments] == [(1.0, 0.75), (0.75, 0.5), (0.5, 0.0)]
    assert all(len(s) >= 2 and s == sorted(s, reverse=True) for s in segments)


def test_states_start_at_the_seeded_noise_and_do_not_depend_on_batching():
    recipe = tiny()
    cpu = torch.device("cpu")
    teacher = load_teacher("", recipe.model_config(), seed=0, device=cpu)
    data = build_dataset(recipe)
    both = teacher_trajectory(teacher, [data[0], data[1]], recipe, cpu)
    one = teacher_trajectory(teacher, [data[1]], recipe, cpu)
    assert both.shape == (2, 4, 16, 4, 4, 4)  # (B, L = {T0, T1, T2, 0}, C, F, h, w)
    assert torch.allclose(both[1], one[0], atol=1e-5)
    noise = torch.randn((16, 4, 4, 4), generator=torch.Generator().manual_seed(mix_seed(0, 1, 17)))
    assert torch.equal(one[0, 0], noise)  # T0 = 1000: the first state is the noise itself
    assert not torch.allclose(one[0, 1], one[0, 2])


def test_cache_command_resumes_and_refuses_other_settings(tmp_path, trajectories):
    out = tmp_path / "traj"
    runner = CliRunner()
    args = ["distill", "trajectories", "--recipe", "test-tiny", "--out", str(out),
            "--shard-size", "3"]  # fmt: skip
    assert runner.invoke(app, args).exit_code == 0
    first = load_file(str(shard_path(out, 1)))
    assert torch.equal(first["indices"], torch.tensor([3, 4, 5]))
    ref = TrajectoryCache(trajectories)
    assert torch.allclose(TrajectoryCache(out).states(4), ref.states(4))

    # an interrupted run (shard 1 missing, a stale partial file) is finished by running it again
    shard_path(out, 1).unlink()
    shard_path(out, 1).with_suffix(".partial").write_bytes(b"truncated")
    with pytest.raises(ValueError, match="incomplete"):
        TrajectoryCache(out)
    mtime = shard_path(out, 0).stat().st_mtime_ns
    assert runner.invoke(app, args).exit_code == 0
    assert shard_path(out, 0).stat().st_mtime_ns == mtime  # complete shards are kept
    again = load_file(str(shard_path(out, 1)))
    assert torch.equal(again["states"], first["states"])

    bad = runner.invoke(app, [*args, "--set", "teacher_steps=5"])
    assert bad.exit_code != 0 and "different settings (steps)" in " ".join(bad.output.split())
    with pytest.raises(ValueError, match="do not match the recipe"):
        TrajectoryCache(out, tiny("seed=3"))


def test_generation_arguments_are_checked(tmp_path):
    recipe = tiny()
    teacher = load_teacher("", recipe.model_config(), seed=0, device=torch.device("cpu"))
    with pytest.raises(ValueError, match="count"):
        generate_trajectories(recipe, teacher, build_dataset(recipe), tmp_path, count=99)
    with pytest.raises(FileNotFoundError, match="lpm distill trajectories"):
        TrajectoryCache(tmp_path / "nothing")


@pytest.mark.multiproc
def test_ranks_under_torchrun_share_out_the_shards_of_the_same_cache(tmp_path, trajectories):
    """`lpm distill trajectories` on 2 ranks writes, shard for shard, what one process wrote."""
    import shutil

    from tests.train.conftest import run_cli

    torchrun = shutil.which("torchrun")
    if torchrun is None:
        pytest.skip("torchrun is not on PATH")
    out = tmp_path / "traj"
    run_cli([torchrun, "--standalone", "--nproc_per_node=2", "-m", "lpm.cli.main", "distill",
             "trajectories", "--recipe", "test-tiny", "--out", str(out), "--shard-size", "3"],
            timeout=240)  # fmt: skip
    shards = sorted(p.name for p in (out / "shards").iterdir())
    assert shards == sorted(p.name for p in (trajectories / "shards").iterdir())
    assert len(shards) == 3  # 8 clips in shards of 3: rank 0 wrote 0 and 2, rank 1 wrote 1
    for name in shards:
        ours, one = (
            load_file(str(out / "shards" / name)),
            load_file(str(trajectories / "shards" / name)),
        )
        assert torch.equal(ours["indices"], one["indices"])
        torch.testing.assert_close(ours["states"], one["states"], rtol=0, atol=1e-6)
    assert (
        TrajectoryCache(out, tiny()).states(7).shape
        == TrajectoryCache(trajectories).states(7).shape
    )
