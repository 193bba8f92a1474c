"""lpm.diffusion: flow-matching schedules, targets, samplers and guidance (pure functions).

Conventions (Wan2.1): sigma in [0, 1], x_t = (1 - sigma) x0 + sigma eps, the model predicts the
velocity v = eps - x0 and takes the timestep t = 1000 sigma. See docs/diffusion.md.
"""

from lpm.diffusion.flow import (
    add_noise,
    expand_sigma,
    flow_matching_loss,
    noise_from_velocity,
    renoise,
    velocity_from_x0,
    velocity_target,
    x0_from_velocity,
)
from lpm.diffusion.guidance import (
    GuidanceLevel,
    GuidedModel,
    combine_guidance,
    drop_conditions,
    guidance_coefficients,
    needed_passes,
    text_audio_guidance,
)
from lpm.diffusion.samplers import euler_sample, few_step_sample, sample, unipc_sample
from lpm.diffusion.schedules import (
    few_step_sigmas,
    flow_sigmas,
    sample_training_sigmas,
    shift_sigma,
    sigma_to_timestep,
    timestep_to_sigma,
    unshift_sigma,
)

__all__ = [
    "GuidanceLevel",
    "GuidedModel",
    "add_noise",
    "combine_guidance",
    "drop_conditions",
    "euler_sample",
    "expand_sigma",
    "few_step_sample",
    "few_step_sigmas",
    "flow_matching_loss",
    "flow_sigmas",
    "guidance_coefficients",
    "needed_passes",
    "noise_from_velocity",
    "renoise",
    "sample",
    "sample_training_sigmas",
    "shift_sigma",
    "sigma_to_timestep",
    "text_audio_guidance",
    "timestep_to_sigma",
    "unipc_sample",
    "unshift_sigma",
    "velocity_from_x0",
    "velocity_target",
    "x0_from_velocity",
]
