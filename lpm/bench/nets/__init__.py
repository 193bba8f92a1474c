"""External networks of the benchmark, built from their published architectures and loaded
from local released checkpoints (nothing is downloaded).

- `syncnet`: SyncNet audio / lip streams (`syncnet_v2.model`), scored by `lpm.bench.avsync`.
- `arcface`: insightface IResNet identity backbones (`backbone.pth`, r18..r200).
- `i3d`: Inception-v1 I3D (pytorch-i3d `rgb_imagenet.pt`), the features of FVD.
- `checkpoint`: reading state dicts and checking them tensor by tensor.
"""

from lpm.bench.nets.arcface import IResNet, IResNetConfig, load_arcface
from lpm.bench.nets.i3d import I3DConfig, InceptionI3d, load_i3d
from lpm.bench.nets.syncnet import SyncNet, SyncNetConfig, load_syncnet

__all__ = [
    "I3DConfig",
    "IResNet",
    "IResNetConfig",
    "InceptionI3d",
    "SyncNet",
    "SyncNetConfig",
    "load_arcface",
    "load_i3d",
    "load_syncnet",
]
