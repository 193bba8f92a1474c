"""Which online model the server runs: a bundle directory, the shipped one, or random weights."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from lpm.device import resolve_device
from lpm.inference import ModelBundle, shipped_bundle_path
from lpm.inference.bundle import transformer_dtype, untrained_bundle

log = logging.getLogger(__name__)

SHIPPED_ONLINE = "lpm-nano-online"


@dataclass(frozen=True)
class ServedModel:
    """A loaded online bundle and how it was obtained."""

    bundle: ModelBundle
    name: str
    random_weights: bool
    """True when the weights are random (demo/dev): motion is noise, only speed is real."""


def load_served_model(
    model: Path | None,
    *,
    random_weights: bool = False,
    size: int = 64,
    device: str = "cpu",
    dtype: str | None = None,
) -> ServedModel:
    """Resolve ``--model`` / ``--random-weights`` into a loaded online bundle.

    Raises:
        FileNotFoundError: no directory given and no trained lpm-nano-online ships with lpm.
        ValueError: the bundle is not an online (chunk-causal) model.
    """
    device = resolve_device(device)
    dtype = transformer_dtype(dtype, device)
    if random_weights:
        if model is not None:
            raise ValueError("give either --model DIR or --random-weights, not both")
        log.warning("serving lpm-nano-online with RANDOM weights: speed is real, motion is not")
        bundle = untrained_bundle(SHIPPED_ONLINE, size=size)
        for module in bundle.modules().values():
            module.to(device)
        for module in (bundle.transformer, bundle.refiner):
            module.to(dtype)
        return ServedModel(bundle, f"{SHIPPED_ONLINE} (random weights)", True)
    if model is None:
        try:
            model = shipped_bundle_path(SHIPPED_ONLINE)
        except FileNotFoundError as err:
            raise FileNotFoundError(
                f"{err}. To try the server now, run `lpm serve --random-weights` "
                "(the lpm-nano-online architecture with random weights)."
            ) from None
    bundle = ModelBundle.load(model, device=device, dtype=dtype)
    if bundle.cfg.attention != "chunk_causal":
        raise ValueError(
            f"{model} holds {bundle.cfg.name!r}, an offline model; `lpm serve` needs an online "
            "(chunk-causal) bundle such as lpm-nano-online"
        )
    return ServedModel(bundle, bundle.spec.name, False)
