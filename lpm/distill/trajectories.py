"""Teacher trajectories for stages 1-2: generated once, cached as safetensors shards, resumable.

Legend: N clips in a shard, L recorded levels, C latent channels, F latent frames, h/w grid.

For every dataset clip i < ``count`` the guided Base LPM teacher integrates its flow ODE from
seeded noise (seed, i) over the whole clip, bidirectionally, and the states at the levels
{T0, T1, ..., T2, 0} are recorded (the solver's grid is split at those levels, so each recorded
state is exactly the one the integration continues from). Layout::

    <out>/trajectories.json          TrajectorySpec: levels, teacher, sampler, data source
    <out>/shards/shard-XXXXX.safetensors
        indices (N,) int64           dataset indices
        states  (N, L, C, F, h, w)   float32, states[:, -1] the teacher's clean sample

Shards are written atomically, so an interrupted run is resumed by running it again: complete
shards are kept and the rest are generated.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import torch
from safetensors import safe_open
from safetensors.torch import save_file

from lpm.diffusion import flow_sigmas, sample
from lpm.distill.conditions import clip_conditions, guided_teacher
from lpm.distill.recipes import DistillRecipe
from lpm.models.dit.model import LPMTransformer
from lpm.train.batch import Dataset, TrainSample, collate, mix_seed

SPEC_NAME = "trajectories.json"


@dataclass(kw_only=True, frozen=True)
class TrajectorySpec:
    """What a trajectory cache holds and how it was made (compared on resume and on load)."""

    sigmas: tuple[float, ...]
    """Recorded levels, descending, ending with 0."""
    teacher: str
    """Teacher path ("" = seeded random teacher)."""
    model: dict
    """The teacher's ModelConfig."""
    steps: int
    """Solver steps over the whole [1, 0] range (the grid is split at the recorded levels)."""
    solver: str
    shift: float
    text_scale: float
    audio_scale: float
    data: str
    data_path: str
    dataset_size: int
    latent_shape: tuple[int, int, int]
    seed: int
    count: int
    """Clips 0..count-1 of the dataset."""
    shard_size: int
    """Clips per shard."""
    cue_scale: float = 0.0
    cue_min_sigma: float = 0.0

    @classmethod
    def from_recipe(cls, recipe: DistillRecipe, *, count: int, shard_size: int, teacher_cfg):
        return cls(
            sigmas=recipe.trajectory_sigmas(), teacher=recipe.teacher,
            model=teacher_cfg.to_dict(), steps=recipe.teacher_steps,
            solver=recipe.teacher_solver, shift=recipe.shift, text_scale=recipe.text_scale,
            audio_scale=recipe.audio_scale, data=recipe.data, data_path=recipe.data_path,
            dataset_size=recipe.dataset_size, latent_shape=recipe.latent_shape(),
            seed=recipe.seed, count=count, shard_size=shard_size, cue_scale=recipe.cue_scale,
            cue_min_sigma=recipe.cue_min_sigma,
        )  # fmt: skip

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True)

    @classmethod
    def read(cls, directory: Path) -> TrajectorySpec:
        path = Path(directory) / SPEC_NAME
        if not path.is_file():
            raise FileNotFoundError(
                f"{directory} holds no teacher trajectories ({SPEC_NAME} missing); generate them "
                "with `lpm distill trajectories --recipe NAME --out DIR`"
            )
        data = json.loads(path.read_text())
        data["sigmas"] = tuple(data["sigmas"])
        data["latent_shape"] = tuple(data["latent_shape"])
        return cls(**data)

    def num_shards(self) -> int:
        return -(-self.count // self.shard_size)


def solver_segments(levels: tuple[float, ...], steps: int, shift: float) -> list[list[float]]:
    """The solver grid ``flow_sigmas(steps, shift)`` united with ``levels`` and split at them:
    one strictly decreasing sigma list per pair of consecutive levels (>= 1 step each)."""
    grid = [float(s) for s in flow_sigmas(steps, shift).tolist()]
    points = sorted({*grid, *levels, 1.0}, reverse=True)
    segments = []
    for hi, lo in zip(levels[:-1], levels[1:], strict=True):
        segments.append([s for s in points if lo <= s <= hi])
    return segments


@torch.no_grad()
def teacher_trajectory(
    teacher: LPMTransformer,
    samples: list[TrainSample],
    recipe: DistillRecipe,
    device: torch.device,
) -> torch.Tensor:
    """States (B, L, C, F, h, w) of the guided teacher's ODE at ``recipe.trajectory_sigmas()``.

    The noise of clip i is seeded by (seed, i), so a trajectory does not depend on batching.
    """
    batch = collate(samples).to(device)
    clip = clip_conditions(batch)
    model_fn = guided_teacher(
        teacher, clip, text_scale=recipe.text_scale, audio_scale=recipe.audio_scale,
        cue_scale=recipe.cue_scale, cue_min_sigma=recipe.cue_min_sigma,
    )  # fmt: skip
    shape = batch.latents.shape[1:]
    seeds = [mix_seed(recipe.seed, s.index, 17) for s in samples]
    noise = torch.stack(
        [torch.randn(shape, generator=torch.Generator().manual_seed(seed)) for seed in seeds]
    ).to(device)
    levels = recipe.trajectory_sigmas()
    x = noise
    if levels[0] < 1.0:  # integrate from pure noise down to T0 first
        for seg in solver_segments((1.0, levels[0]), recipe.teacher_steps, recipe.shift):
            x = sample(model_fn, x, seg, solver=recipe.teacher_solver)
    states = [x]
    for seg in solver_segments(levels, recipe.teacher_steps, recipe.shift):
        x = sample(model_fn, x, seg, solver=recipe.teacher_solver)
        states.append(x)
    return torch.stack(states, dim=1).float()


def generate_trajectories(
    recipe: DistillRecipe,
    teacher: LPMTransformer,
    dataset: Dataset,
    out: str | Path,
    *,
    count: int | None = None,
    shard_size: int = 64,
    overwrite: bool = False,
    device: torch.device | str = "cpu",
    on_shard: Callable[[int, int], None] | None = None,
    rank: int = 0,
    world_size: int = 1,
) -> TrajectorySpec:
    """Generate (or finish generating) the trajectory cache of ``recipe`` in ``out``.

    Shards already present are kept; a cache made with different settings is refused unless
    ``overwrite``. ``on_shard(done, total)`` reports progress. With ``world_size`` processes
    (`lpm distill trajectories` under torchrun), process ``rank`` generates the shards
    ``rank, rank + world_size, ...``; a clip's trajectory depends only on (seed, clip index),
    so the cache is the same file for file as one process writes. Rank 0 alone writes the spec
    and clears old shards; the caller synchronises the ranks around this call.
    """
    out, device = Path(out), torch.device(device)
    count = len(dataset) if count is None else count
    if not 1 <= count <= len(dataset):
        raise ValueError(f"count={count} must be in [1, {len(dataset)}] (the dataset's size)")
    if shard_size < 1:
        raise ValueError(f"shard_size={shard_size} must be >= 1")
    spec = TrajectorySpec.from_recipe(
        recipe, count=count, shard_size=shard_size, teacher_cfg=teacher.cfg
    )
    if not 0 <= rank < world_size:
        raise ValueError(f"rank={rank} must be in [0, world_size={world_size})")
    if (out / SPEC_NAME).is_file() and not overwrite:
        before = json.loads((out / SPEC_NAME).read_text())
        now = json.loads(spec.to_json())
        changed = sorted(k for k in now.keys() | before.keys() if before.get(k) != now.get(k))
        if changed:
            raise ValueError(
                f"{out} holds trajectories made with different settings ({', '.join(changed)}); "
                "choose another --out or pass --overwrite"
            )
    if rank == 0:
        (out / "shards").mkdir(parents=True, exist_ok=True)
        if overwrite:
            for old_shard in (out / "shards").glob("*.safetensors"):
                old_shard.unlink()
        (out / SPEC_NAME).write_text(spec.to_json())
    if world_size > 1:
        from lpm.parallel import barrier

        barrier()  # the spec and a cleared shard folder before any rank writes
    for k in range(rank, spec.num_shards(), world_size):
        path = shard_path(out, k)
        if not path.is_file():
            indices = list(range(k * shard_size, min(count, (k + 1) * shard_size)))
            batches = [
                indices[j : j + recipe.batch_size]
                for j in range(0, len(indices), recipe.batch_size)
            ]
            states = [
                teacher_trajectory(teacher, [dataset[i] for i in b], recipe, device).cpu()
                for b in batches
            ]
            tmp = path.with_suffix(".partial")
            save_file(
                {"indices": torch.tensor(indices, dtype=torch.int64),
                 "states": torch.cat(states).contiguous()},
                str(tmp),
            )  # fmt: skip
            os.replace(tmp, path)
        if on_shard is not None:
            on_shard(k + 1, spec.num_shards())
    return spec


def shard_path(out: Path, k: int) -> Path:
    return Path(out) / "shards" / f"shard-{k:05d}.safetensors"


class TrajectoryCache:
    """Read access to a complete trajectory cache: ``states(i)`` is (L, C, F, h, w)."""

    def __init__(self, directory: str | Path, recipe: DistillRecipe | None = None) -> None:
        self.root = Path(directory)
        self.spec = TrajectorySpec.read(self.root)
        shards = range(self.spec.num_shards())
        missing = [k for k in shards if not shard_path(self.root, k).is_file()]
        if missing:
            raise ValueError(
                f"{self.root} is incomplete ({len(missing)} of {self.spec.num_shards()} shards "
                "missing); run `lpm distill trajectories` again with the same settings to finish it"
            )
        if recipe is not None:
            self._check(recipe)
        self._handles: dict[int, object] = {}

    def _check(self, recipe: DistillRecipe) -> None:
        want = {"sigmas": recipe.trajectory_sigmas(), "data": recipe.data,
                "data_path": recipe.data_path, "dataset_size": recipe.dataset_size,
                "latent_shape": recipe.latent_shape(), "seed": recipe.seed}  # fmt: skip
        have = dataclasses.asdict(self.spec)
        bad = {k: (have[k], v) for k, v in want.items() if have[k] != v}
        if bad:
            detail = ", ".join(f"{k}: cache {a!r} vs recipe {b!r}" for k, (a, b) in bad.items())
            raise ValueError(
                f"trajectories in {self.root} do not match the recipe ({detail}); regenerate "
                "them with this recipe"
            )

    def __len__(self) -> int:
        return self.spec.count

    def states(self, index: int) -> torch.Tensor:
        """(L, C, F, h, w) recorded states of dataset clip ``index`` (< count)."""
        if not 0 <= index < self.spec.count:
            raise IndexError(f"clip {index} has no trajectory (the cache holds {self.spec.count})")
        k, row = divmod(index, self.spec.shard_size)
        if k not in self._handles:
            self._handles[k] = safe_open(str(shard_path(self.root, k)), framework="pt")
        return self._handles[k].get_slice("states")[row : row + 1][0]
