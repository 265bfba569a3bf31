"""`omnimodel train`: behaviour cloning on the task suite, by the arch that trains its bundled policy.

Training is an arch's own recipe (its loss, its batching, its checkpoint): the first registered
arch that answers `Arch.trainer()` provides the module, and this module's names are looked up
there (`from omnimodel.train import TrainConfig, train`).
"""

from __future__ import annotations

from types import ModuleType

from omnimodel.errors import ConfigError


def trainer(arch=None) -> ModuleType:
    """The training module of `arch` (an Arch or its name), or of the first registered arch that has one."""
    from omnimodel import archs

    candidates = (
        [archs.get(arch) if isinstance(arch, str) else arch] if arch else list(archs.registry().values())
    )
    for a in candidates:
        mod = a.trainer()
        if mod is not None:
            return mod
    raise ConfigError(
        f"no registered architecture trains a policy ({', '.join(archs.names())}); add Arch.trainer() to one"
    )


def __getattr__(name: str):
    if name.startswith("__"):
        raise AttributeError(name)
    return getattr(trainer(), name)
