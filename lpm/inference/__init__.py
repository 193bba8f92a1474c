"""lpm.inference: offline generation and (later) streaming sessions."""

from lpm.inference.bundle import BundleSpec, ModelBundle, SamplingDefaults, shipped_bundle_path
from lpm.inference.pipeline import (
    GeneratedVideo,
    Pipeline,
    ReferenceImage,
    ScriptSegment,
    load_script,
)

__all__ = [
    "BundleSpec",
    "GeneratedVideo",
    "ModelBundle",
    "Pipeline",
    "ReferenceImage",
    "SamplingDefaults",
    "ScriptSegment",
    "load_script",
    "shipped_bundle_path",
]
