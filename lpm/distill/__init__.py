"""lpm.distill: four-stage distillation of Base LPM into the Online LPM backbone and refiner.

    recipes.py       DistillRecipe (all four stages), the registry, --set overrides
    conditions.py    a clip's conditions whole (teacher, critic) and per chunk (students);
                     the guided teacher as the real score
    models.py        teacher / student / critic construction (one LPMTransformer class)
    trajectories.py  teacher ODE trajectories at {T0, T1, T2, 0}: generation, shards, resume
    rollout.py       `rollout` (the streaming ChunkStepper loop) and teacher-forced chunks
    dmd.py           DMD generator loss, critic flow-matching loss, optimiser step
    lpips.py         LPIPS (AlexNet / VGG16 trunk + heads) and its local-weights loader
    perceptual.py    stage-2 perceptual loss: latent teacher features, or LPIPS on decoded frames
    trainer.py       DistillTrainer: one stage on lpm.train's loop, checkpoints and metrics

See docs/distill.md.
"""

from lpm.distill.dmd import critic_loss, dmd_loss, draw_noise
from lpm.distill.lpips import LPIPS, LPIPSConfig, load_lpips
from lpm.distill.recipes import RECIPES, STAGES, DistillRecipe, apply_overrides, get_recipe
from lpm.distill.rollout import Rollout, rollout, teacher_forced
from lpm.distill.trainer import DistillTrainer
from lpm.distill.trajectories import TrajectoryCache, generate_trajectories

__all__ = [
    "LPIPS",
    "RECIPES",
    "STAGES",
    "DistillRecipe",
    "DistillTrainer",
    "LPIPSConfig",
    "Rollout",
    "TrajectoryCache",
    "apply_overrides",
    "critic_loss",
    "dmd_loss",
    "draw_noise",
    "generate_trajectories",
    "get_recipe",
    "load_lpips",
    "rollout",
    "teacher_forced",
]
