"""lpm.train: recipes, batches, the flow-matching trainer, EMA and checkpoints."""

from lpm.train.batch import (
    Dataset,
    StageSampler,
    SyntheticDataset,
    TrainBatch,
    TrainSample,
    action_repeats,
    collate,
)
from lpm.train.checkpoint import (
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from lpm.train.conditioning import FlowProblem, build_problem
from lpm.train.ema import EMA
from lpm.train.recipes import (
    RECIPES,
    StageRecipe,
    TrainRecipe,
    apply_overrides,
    base_curriculum,
    get_recipe,
)
from lpm.train.schedule import build_optimizer, lr_factor
from lpm.train.trainer import Trainer, TrainResult, build_dataset

__all__ = [
    "EMA",
    "RECIPES",
    "Dataset",
    "FlowProblem",
    "StageRecipe",
    "StageSampler",
    "SyntheticDataset",
    "TrainBatch",
    "TrainRecipe",
    "TrainResult",
    "TrainSample",
    "Trainer",
    "action_repeats",
    "apply_overrides",
    "base_curriculum",
    "build_dataset",
    "build_optimizer",
    "build_problem",
    "collate",
    "get_recipe",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "lr_factor",
    "save_checkpoint",
]
