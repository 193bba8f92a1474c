"""Stage probes: small networks that read labels back from Stage frames.

`load_probes()` returns `StageProbes`, which reads mouth opening, head pose, expression, blink,
identity embeddings (per frame) and text-triggered actions (from windows of frames) out of any
rendered or generated Stage portrait. `train_probes()` is the training recipe that produced the
weights shipped in `lpm/bench/probes/weights/`; `docs/probes.md` gives the measured accuracies.
"""

from lpm.bench.probes.config import ProbeConfig, ProbeTrainConfig
from lpm.bench.probes.probes import (
    ActionReadings,
    FrameReadings,
    StageProbes,
    load_probes,
    save_probes,
)
from lpm.bench.probes.train import TrainResult, train_probes

__all__ = [
    "ActionReadings",
    "FrameReadings",
    "ProbeConfig",
    "ProbeTrainConfig",
    "StageProbes",
    "TrainResult",
    "load_probes",
    "save_probes",
    "train_probes",
]
