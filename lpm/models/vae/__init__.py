"""Video VAE: the Wan2.1 causal VAE (streaming chunk decode) and a light distilled decoder."""

from lpm.models.vae.light_decoder import (
    LightDecoder,
    LightDecoderConfig,
    distillation_loss,
    trim_to_vae,
)
from lpm.models.vae.wan import (
    StreamingVAEDecoder,
    WanVAE,
    WanVAEConfig,
    build_wan_vae,
    load_wan_vae,
)

__all__ = [
    "LightDecoder",
    "LightDecoderConfig",
    "StreamingVAEDecoder",
    "WanVAE",
    "WanVAEConfig",
    "build_wan_vae",
    "distillation_loss",
    "load_wan_vae",
    "trim_to_vae",
]
