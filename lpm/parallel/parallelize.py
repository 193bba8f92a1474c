"""Apply activation checkpointing, torch.compile and FSDP2 to a model from outside.

Order (as in torchtitan): checkpointing -> compile -> FSDP. Each step is per repeated block,
found through the model's ``block_class`` attribute, so this file knows nothing of the model
beyond its ``block_class`` and ``fp32_modules`` class attributes. Every step keeps the model's
state-dict keys unchanged: checkpointing and compile act on each block in place (no wrapper
module), and FSDP2 only swaps parameters for sharded DTensors.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any, Literal

import torch
from torch import nn
from torch.utils.checkpoint import checkpoint

log = logging.getLogger(__name__)

MixedPrecision = Literal["bf16"] | None


def _blocks(model: nn.Module) -> list[nn.Module]:
    block_class = getattr(model, "block_class", None)
    if block_class is None:
        raise ValueError(
            f"{type(model).__name__} declares no `block_class`; parallelize() needs it to find "
            "the repeated blocks"
        )
    blocks = [m for m in model.modules() if isinstance(m, block_class)]
    if not blocks:
        raise ValueError(f"{type(model).__name__} holds no {block_class.__name__} modules")
    return blocks


def apply_activation_checkpointing(model: nn.Module) -> int:
    """Recompute each block's activations in the backward pass (non-reentrant checkpoint).

    The block's ``forward`` is replaced on the instance, so parameter names do not change.
    Returns the number of blocks wrapped.
    """
    blocks = _blocks(model)
    for block in blocks:
        inner = block.forward

        @functools.wraps(inner)
        def forward(*args, _inner=inner, **kwargs):
            return checkpoint(_inner, *args, use_reentrant=False, **kwargs)

        block.forward = forward
    return len(blocks)


#: Inductor options for the compiled blocks. Inductor's memory-coalescing analysis for Triton
#: tiling fails an assertion (torch 2.11, an H200) when a block is recompiled for a new token
#: count with symbolic shapes, which every training run does (references and context frames
#: vary the sequence length); it is switched off for these blocks.
COMPILE_OPTIONS = {"triton.coalesce_tiling_analysis": False}


def apply_compile(model: nn.Module) -> int:
    """``torch.compile`` each block in place (``nn.Module.compile``). Returns the block count."""
    blocks = _blocks(model)
    for block in blocks:
        block.compile(options=COMPILE_OPTIONS)
    return len(blocks)


def _fp32_submodules(model: nn.Module, block: nn.Module | None = None) -> list[nn.Module]:
    """Submodules whose name contains one of the model's ``fp32_modules`` fragments."""
    fragments = tuple(getattr(model, "fp32_modules", ()))
    root = block if block is not None else model
    out = []
    for name, module in root.named_modules():
        if (
            name
            and any(f in name.split(".")[-1] for f in fragments)
            and any(True for _ in module.parameters(recurse=True))
        ):
            out.append(module)
    return out


def apply_fsdp(model: nn.Module, *, mixed_precision: MixedPrecision = None) -> None:
    """Shard every block, then the root, with FSDP2 over all ranks of the default group.

    With ``mixed_precision="bf16"`` parameters are gathered in bf16 and gradients reduced in
    fp32; submodules named by the model's ``fp32_modules`` (time embedding, norms) are sharded as
    their own units with an fp32 policy so they keep computing in fp32. Parameters that sit
    directly on a block (e.g. its ``modulation`` table) follow the block's policy; the block
    upcasts them itself.
    """
    from torch.distributed.fsdp import MixedPrecisionPolicy, fully_shard

    if mixed_precision not in (None, "bf16"):
        raise ValueError(f"mixed_precision={mixed_precision!r} must be 'bf16' or None")
    fp32 = MixedPrecisionPolicy(param_dtype=torch.float32, reduce_dtype=torch.float32)
    policy = (
        MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32)
        if mixed_precision == "bf16"
        else fp32
    )
    blocks = _blocks(model)
    for block in blocks:
        if mixed_precision is not None:
            for sub in _fp32_submodules(model, block):
                fully_shard(sub, mp_policy=fp32)
        fully_shard(block, mp_policy=policy)
    if mixed_precision is not None:
        block_ids = {id(m) for b in blocks for m in b.modules()}
        for sub in _fp32_submodules(model):
            if id(sub) not in block_ids:
                fully_shard(sub, mp_policy=fp32)
    fully_shard(model, mp_policy=policy)


def parallelize(
    model: nn.Module,
    *,
    fsdp: bool,
    activation_checkpointing: bool,
    compile: bool,
    mixed_precision: MixedPrecision,
) -> nn.Module:
    """Make a single-device model ready for (distributed) training, in place.

    Args:
        model: a model declaring ``block_class`` (and optionally ``fp32_modules``).
        fsdp: shard with FSDP2 over the default process group (which must be initialised).
        activation_checkpointing: recompute block activations in backward to save memory.
        compile: ``torch.compile`` each block.
        mixed_precision: ``"bf16"`` for bf16 compute under FSDP (use it on GPU), or None.

    Returns:
        The same module, modified in place.
    """
    if activation_checkpointing:
        n = apply_activation_checkpointing(model)
        log.info("activation checkpointing on %d blocks", n)
    if compile:
        n = apply_compile(model)
        log.info("torch.compile on %d blocks", n)
    if fsdp:
        import torch.distributed as dist

        if not (dist.is_available() and dist.is_initialized()):
            raise ValueError("fsdp=True needs an initialised process group (launch with torchrun)")
        apply_fsdp(model, mixed_precision=mixed_precision)
        log.info("FSDP2 over %d ranks, mixed_precision=%s", dist.get_world_size(), mixed_precision)
    return model


@contextlib.contextmanager
def unsharded(module: nn.Module) -> Iterator[nn.Module]:
    """Gather an FSDP2 module's own parameters for code that uses them outside ``forward``.

    FSDP2 keeps a sharded module's parameters as DTensor shards between forwards and gathers
    them in its forward hooks; a method such as `LPMTransformer.cache_references` that uses the
    root's own layers (patch and time embeddings) and then calls the blocks directly would mix
    shards with plain tensors. Inside this context the root's parameters are whole; the blocks
    still gather their own in their forward hooks. The root's FSDP state is initialised first,
    as a forward through the root would, so the blocks are not mistaken for roots. Any other
    module passes through unchanged.
    """
    from torch.distributed.fsdp import FSDPModule

    if not isinstance(module, FSDPModule):
        yield module
        return
    module._get_fsdp_state()._lazy_init()  # what the root's first forward does
    module.unshard()
    try:
        yield module
    finally:
        module.reshard()


def sharded_from_rank0(
    build: Callable[[], nn.Module],
    whole_state: Callable[[], dict[str, torch.Tensor]],
    *,
    device: torch.device,
    is_main: bool,
    prepare: Callable[[nn.Module], None] = lambda _m: None,
    **options: Any,
) -> nn.Module:
    """A model sharded with FSDP2 whose values only rank 0 ever holds whole.

    Rank 0 calls ``whole_state()`` (in host memory: a checkpoint read, or a seeded model built
    whole); every rank calls ``build()`` on the meta device, ``prepare(model)`` (freezing, say),
    `parallelize` with ``fsdp=True`` and ``options``, allocates only its own shards on
    ``device`` and receives their values from rank 0. An error in ``whole_state`` (a missing or
    unfitting checkpoint) is raised on every rank, so no rank waits for values that never come.
    """
    import torch.distributed as dist
    from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

    state: dict[str, torch.Tensor] = {}
    failure: BaseException | None = None
    if is_main:
        try:
            state = whole_state()
        except (ValueError, FileNotFoundError) as err:
            failure = err
    box = [None if failure is None else (type(failure).__name__, str(failure))]
    dist.broadcast_object_list(box, src=0)
    if box[0] is not None:
        if failure is not None:
            raise failure
        kind, message = box[0]
        raise (FileNotFoundError if kind == "FileNotFoundError" else ValueError)(message)
    with torch.device("meta"):
        model = build()
    prepare(model)
    parallelize(model, fsdp=True, **options)
    model.to_empty(device=device)
    set_model_state_dict(model, state, options=StateDictOptions(
        full_state_dict=True, broadcast_from_rank0=True))  # fmt: skip
    return model
