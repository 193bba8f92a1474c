"""Optimiser and learning-rate schedule."""

from __future__ import annotations

import math

import torch
from torch import nn

from lpm.train.recipes import TrainRecipe


def lr_factor(step: int, *, warmup_steps: int, total_steps: int, min_ratio: float) -> float:
    """Multiplier of the peak learning rate at 0-based optimiser step ``step``.

    Linear warm-up ``(step + 1) / warmup_steps`` for the first ``warmup_steps`` steps, then a
    cosine from 1 down to ``min_ratio`` reached at the last step.
    """
    if step < warmup_steps:
        return (step + 1) / warmup_steps
    decay_steps = max(1, total_steps - warmup_steps - 1)
    progress = min(1.0, (step - warmup_steps) / decay_steps)
    return min_ratio + (1.0 - min_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))


def build_optimizer(
    model: nn.Module, recipe: TrainRecipe
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW over the trainable parameters (no decay on 1-D tensors: biases, norms; the text-cue
    modules at ``cue_lr_scale`` times the rate) and its warm-up + cosine `LambdaLR`."""
    decay, no_decay, cue_decay, cue_no_decay = [], [], [], []
    for name, p in model.named_parameters():
        if p.requires_grad:
            cue = name.startswith("cue_")
            if p.ndim <= 1:
                (cue_no_decay if cue else no_decay).append(p)
            else:
                (cue_decay if cue else decay).append(p)
    groups = [
        {"params": decay, "weight_decay": recipe.weight_decay},
        {"params": no_decay, "weight_decay": 0.0},
    ]
    cue_lr = recipe.lr * getattr(recipe, "cue_lr_scale", 1.0)  # distill / DPO recipes: 1
    groups += [
        {"params": ps, "weight_decay": wd, "lr": cue_lr}
        for ps, wd in ((cue_decay, recipe.weight_decay), (cue_no_decay, 0.0))
        if ps
    ]
    opt = torch.optim.AdamW(groups, lr=recipe.lr, betas=recipe.betas)
    total = recipe.total_steps

    def factor(step: int) -> float:
        return lr_factor(step, warmup_steps=recipe.warmup_steps, total_steps=total,
                         min_ratio=recipe.min_lr_ratio)  # fmt: skip

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)
