"""GGUF names through the architecture that owns them: the generic side of the name tables.

Every tensor name and metadata key is spelled in one table: the generic keys in
omnimodel.ggufio.constants, an architecture's own in omnimodel/archs/<arch>/names.py (`KEYS`,
`TENSORS`). These helpers ask the arch: pass it (an Arch or its name) where the caller knows it;
without one, the registered arch whose table names the checkpoint key answers.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from omnimodel.ggufio.constants import GGUF_NAME_MAX, Keys, arch_key

if TYPE_CHECKING:
    from omnimodel.archs.base import Arch

# The generic keys under their older names, for callers not yet on Keys.
KEY_ARCH = Keys.General.ARCHITECTURE
KEY_NAME = Keys.General.NAME
KEY_FILE_TYPE = Keys.General.FILE_TYPE
KEY_QUANT_METHOD = Keys.Omnimodel.QUANT_METHOD
KEY_CONFIG_JSON = Keys.Omnimodel.CONFIG_JSON
KEY_NORM_STATS_JSON = Keys.Omnimodel.DATASET_STATISTICS_JSON

__all__ = ["GGUF_NAME_MAX", "Keys", "arch_for", "arch_key", "component_of", "gguf_names", "is_quantizable"]


def arch_for(arch: Arch | str | None = None, *, key: str | None = None, config=None) -> Arch:
    """The arch to ask: the one given (or named), the config's owner, or the first whose table names `key`."""
    from omnimodel import archs

    if arch is not None:
        return archs.get(arch) if isinstance(arch, str) else arch
    registered = list(archs.registry().values())
    if config is not None:
        for a in registered:
            if a.owns_config(config):
                return a
    if key is not None:
        for a in registered:
            try:
                a.gguf_names(key)
                return a
            except KeyError:
                continue
    return registered[0]


def gguf_names(key: str, arch: Arch | str | None = None) -> list[str]:
    """GGUF tensor name(s) of one checkpoint key (none for a key the arch never runs); KeyError if unnamed."""
    return arch_for(arch, key=key).gguf_names(key)


def component_of(gguf_name: str, arch: Arch | str | None = None) -> str:
    """The component a GGUF tensor counts under (vision, projector, llm, ...)."""
    return arch_for(arch).component_of(gguf_name)


def is_quantizable(gguf_name: str, shape: tuple[int, ...], arch: Arch | str | None = None) -> bool:
    """Whether a GGUF tensor is in its arch's quantized set."""
    return arch_for(arch).is_quantizable(gguf_name, shape)


def __getattr__(name: str):
    # `names.ARCH` (one arch for the whole program) predates the registry; callers should pass the
    # arch's name. Until they do it is the first registered arch's.
    if name == "ARCH":
        return arch_for().name
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
