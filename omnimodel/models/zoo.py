"""Presets as checkpoints through their archs: `zoo make` (random init in the real layout), `zoo info`, `zoo path`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from omnimodel.errors import ConfigError


def random_stats(seed: int, action_dim: int = 7, proprio_dim: int = 8, key: str = "omnimodel_random") -> dict:
    """Plausible dataset_statistics.json content for a random checkpoint (deterministic per seed)."""
    rng = np.random.default_rng(seed)

    def block(dim: int) -> dict:
        lo = -rng.uniform(0.5, 1.0, dim)
        hi = rng.uniform(0.5, 1.0, dim)
        return {
            "mean": ((lo + hi) / 2).tolist(),
            "std": ((hi - lo) / 4).tolist(),
            "max": (hi * 1.1).tolist(),
            "min": (lo * 1.1).tolist(),
            "q01": lo.tolist(),
            "q99": hi.tolist(),
        }

    action = block(action_dim)
    action["mask"] = [True] * (action_dim - 1) + [False]
    return {key: {"action": action, "proprio": block(proprio_dim), "num_transitions": 0, "num_trajectories": 0}}


def build_random_model(name: str, seed: int = 0) -> torch.nn.Module:
    """A preset's reference model with deterministic random weights (its arch builds it)."""
    from omnimodel import archs

    return archs.for_preset(name).random_model(name, seed)[0]


def make_checkpoint(name: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write preset `name` with random weights to `out_dir` in its arch's released layout."""
    from omnimodel import archs

    return archs.for_preset(name).make_checkpoint(name, Path(out_dir), seed=seed)


@dataclass
class ModelInfo:
    """Parameter counts per component and a short module tree."""

    name: str
    total: int
    components: dict[str, int]
    tree: list[tuple[str, str, int]]  # (path, class, params) of the top modules


def info(target: str) -> ModelInfo:
    """Counts for a preset name or a checkpoint directory, from the arch that owns it."""
    from omnimodel import archs

    arch = archs.for_checkpoint(target) if Path(target).is_dir() else archs.for_preset(target)
    return arch.model_info(target)


def format_info(mi: ModelInfo) -> str:
    """A human-readable summary."""
    lines = [f"{mi.name}: {mi.total:,} parameters"]
    for comp, n in mi.components.items():
        lines.append(f"  {comp:<18} {n:>15,}  ({100 * n / mi.total:5.2f}%)")
    lines.append("module tree (depth <= 3):")
    counts = Counter(cls for _, cls, _ in mi.tree)
    for path, cls, n in mi.tree:
        lines.append(f"  {path:<55} {cls:<24} {n:>15,}")
    lines.append("classes: " + ", ".join(f"{c} x{k}" for c, k in counts.most_common()))
    return "\n".join(lines)


def shipped() -> dict[str, Path]:
    """Name -> directory of every checkpoint the registered archs ship inside the package."""
    from omnimodel import archs

    out: dict[str, Path] = {}
    for arch in archs.registry().values():
        out.update(arch.shipped_checkpoints())
    return out


def shipped_path(name: str) -> Path:
    """The directory of a checkpoint shipped inside the package."""
    known = shipped()
    if name not in known:
        raise ConfigError(f"no shipped checkpoint {name!r}: available {', '.join(known) or 'none'}")
    path = known[name]
    if not (path / "config.json").exists():
        raise ConfigError(f"{path}: the shipped checkpoint {name} is not in this installation; reinstall omnimodel")
    return path
