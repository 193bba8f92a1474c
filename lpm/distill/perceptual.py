"""The stage-2 perceptual loss between student and teacher clips.

Legend: B batch, C latent channels, F latent frames, h/w latent grid, N tokens, D width.

Two choices (recipe field ``perceptual``):

``lpips``   LPIPS (`lpm.distill.lpips`, weights supplied by the user) on frames decoded by a
            bundle's VAE: the paper's loss, at the cost of decoding both clips every step and
            back-propagating through the decoder.
``latent``  (default) an LPIPS-like feature distance computed in latent space, with the frozen
            teacher as the feature network: both clips enter the teacher as clean video
            (timestep 0, no conditions), every block's output tokens are unit-normalised over
            channels and the squared distance is averaged over tokens and blocks. No decoder is
            in the loop and no extra weights are needed.
"""

from __future__ import annotations

import torch
from torch import nn

from lpm.models.dit.model import LPMTransformer


class LatentFeatureLoss(nn.Module):
    """Feature distance of two clips (B, C, F, h, w) in a frozen LPM's block activations."""

    def __init__(self, network: LPMTransformer) -> None:
        super().__init__()
        self.network = network

    def _features(self, x: torch.Tensor) -> list[torch.Tensor]:
        feats: list[torch.Tensor] = []
        hooks = [
            block.register_forward_hook(lambda _m, _i, out: feats.append(out))
            for block in self.network.blocks
        ]
        try:
            self.network(x, torch.zeros(x.shape[0], device=x.device), attention="bidirectional")
        finally:
            for h in hooks:
                h.remove()
        return [f / (f.float().square().sum(-1, keepdim=True).sqrt() + 1e-10) for f in feats]

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """Scalar distance; gradients flow to ``pred`` only."""
        with torch.no_grad():
            ref = self._features(target.detach())
        out = self._features(pred)
        per_layer = [(a - b).square().sum(-1).mean() for a, b in zip(out, ref, strict=True)]
        return torch.stack(per_layer).mean()


class DecodedLPIPSLoss(nn.Module):
    """LPIPS between the frames that a VAE decodes from two clips (B, C, F, h, w)."""

    def __init__(self, lpips: nn.Module, vae: nn.Module) -> None:
        super().__init__()
        self.lpips, self.vae = lpips, vae

    def _frames(self, latents: torch.Tensor) -> torch.Tensor:
        video = self.vae.decode(latents)  # (B, 3, T, H, W) in [-1, 1]
        return video.transpose(1, 2).flatten(0, 1)

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            ref = self._frames(target.detach())
        return self.lpips(self._frames(pred), ref).mean()


def build_perceptual(recipe, teacher: LPMTransformer, device: torch.device) -> nn.Module:
    """The recipe's perceptual loss module (frozen)."""
    if recipe.perceptual == "latent":
        return LatentFeatureLoss(teacher)
    from lpm.distill.lpips import LPIPSConfig, load_lpips
    from lpm.inference.bundle import load_encoders

    lpips = load_lpips(recipe.lpips_weights, LPIPSConfig(trunk=recipe.lpips_trunk)).to(device)
    _spec, vae, _text, _audio = load_encoders(recipe.decoder, device=device)
    for p in vae.parameters():
        p.requires_grad_(False)
    return DecodedLPIPSLoss(lpips, vae)
