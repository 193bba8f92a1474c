"""lpm.parallel: distributed set-up and FSDP2 / checkpointing / compile applied from outside.

Model code never imports this package (nor ``torch.distributed``); trainers call
`parallelize` on a single-device model.
"""

from lpm.parallel.distributed import (
    DistInfo,
    all_gather_object,
    all_reduce_mean,
    barrier,
    broadcast_object,
    full_tensor,
    init_distributed,
    launched_by_torchrun,
    teardown_distributed,
)
from lpm.parallel.parallelize import (
    apply_activation_checkpointing,
    apply_compile,
    apply_fsdp,
    parallelize,
    sharded_from_rank0,
    unsharded,
)

__all__ = [
    "DistInfo",
    "all_gather_object",
    "all_reduce_mean",
    "apply_activation_checkpointing",
    "apply_compile",
    "apply_fsdp",
    "barrier",
    "broadcast_object",
    "full_tensor",
    "init_distributed",
    "launched_by_torchrun",
    "parallelize",
    "sharded_from_rank0",
    "teardown_distributed",
    "unsharded",
]
