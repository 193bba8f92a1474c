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
from lpm.models.vae.nano import (  # noqa: E402
    NanoVAE,
    NanoVAEConfig,
    is_nano_vae_dir,
    load_nano_vae,
)

__all__ += ["NanoVAE", "NanoVAEConfig", "is_nano_vae_dir", "load_nano_vae", "load_vae"]


def load_vae(path, *, device="cpu"):
    """A nano VAE or a Wan VAE directory, whichever ``path`` (or ``path/vae``) holds."""
    from pathlib import Path

    path = Path(path)
    for candidate in (path, path / "vae"):
        if is_nano_vae_dir(candidate):
            return load_nano_vae(candidate, device=device)
    return load_wan_vae(path, device=device)
