"""The architecture registry: arch packages found through the `omnimodel.archs` entry points."""

from __future__ import annotations

import json
from functools import cache
from importlib.metadata import entry_points
from pathlib import Path

from omnimodel.archs.base import Arch
from omnimodel.errors import CheckpointError, ConfigError

GROUP = "omnimodel.archs"


@cache
def registry() -> dict[str, Arch]:
    """Name -> arch, one instance each, in entry-point order."""
    out: dict[str, Arch] = {}
    for ep in entry_points(group=GROUP):
        arch = ep.load()()
        out[arch.name] = arch
    if not out:
        raise ConfigError(
            f"no architectures registered (entry-point group {GROUP}); reinstall omnimodel (pip install -e .)"
        )
    return out


def names() -> list[str]:
    """Registered arch names."""
    return list(registry())


def get(name: str) -> Arch:
    """The arch called `name`, or a one-line error listing the known ones."""
    archs = registry()
    if name not in archs:
        raise ConfigError(f"unknown architecture {name!r}: known architectures are {', '.join(archs)}")
    return archs[name]


def for_preset(preset: str) -> Arch:
    """The arch that owns a preset name."""
    for arch in registry().values():
        if preset in arch.presets():
            return arch
    known = ", ".join(p for a in registry().values() for p in a.presets())
    raise ConfigError(f"unknown preset {preset!r}: choose one of {known}")


def read_config_json(ckpt: str | Path) -> dict:
    """A checkpoint's config.json content (one-line errors for a missing or broken file)."""
    path = Path(ckpt) / "config.json"
    if not path.is_file():
        raise CheckpointError(f"{path}: missing; a checkpoint directory needs its config.json")
    try:
        raw = json.loads(path.read_text())
    except ValueError as exc:
        raise CheckpointError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise CheckpointError(f"{path}: not a JSON object; a checkpoint's config.json maps names to values")
    return raw


def for_checkpoint(ckpt: str | Path) -> Arch:
    """The arch whose config.json a checkpoint directory holds."""
    raw = read_config_json(ckpt)
    for arch in registry().values():
        if arch.claims(Path(ckpt), raw):
            return arch
    raise CheckpointError(
        f"{ckpt}: config.json (model_type {raw.get('model_type')!r}) names no known architecture; "
        f"known architectures are {', '.join(registry())}"
    )


def resolve(name: str, ckpt: str | Path) -> Arch:
    """`name`'s arch, checked against the checkpoint's own config.json."""
    arch = get(name)
    found = for_checkpoint(ckpt)
    if found is not arch:
        raise CheckpointError(
            f"{ckpt}: this is a {found.name} checkpoint, not {name}; run `omnimodel port {found.name}`"
        )
    return arch


__all__ = ["Arch", "for_checkpoint", "for_preset", "get", "names", "registry", "resolve"]
