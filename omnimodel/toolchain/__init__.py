"""The pinned GGML source and its cached builds per backend."""

from omnimodel.toolchain.build import BACKENDS, GGMLBuild, detect_cuda_arch, ensure_ggml_build, list_builds
from omnimodel.toolchain.source import ggml_source_dir, source_hash

__all__ = [
    "BACKENDS",
    "GGMLBuild",
    "detect_cuda_arch",
    "ensure_ggml_build",
    "ggml_source_dir",
    "list_builds",
    "source_hash",
]
