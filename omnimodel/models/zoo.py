"""Presets as checkpoints: `zoo make` (random init in the real layout), `zoo info`, `zoo path`."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from omnimodel.archs.openvla_oft.checkpoint import read_config, write_checkpoint
from omnimodel.archs.openvla_oft.model import PRESETS, OpenVLAOFT, init_weights, preset
from omnimodel.atomic import atomic_dir
from omnimodel.errors import ConfigError
from omnimodel.models.tokenizer import build_char_tokenizer, save_tokenizer_files
from omnimodel.paths import package_data_dir

COMPONENTS = ("vision", "projector", "llm", "action_head", "proprio_projector")
_MODULE_OF = {
    "vision": "vision_backbone",
    "projector": "projector",
    "llm": "language_model",
    "action_head": "action_head",
    "proprio_projector": "proprio_projector",
}
SHARD_BYTES = {"openvla-oft-tiny": 4_000_000, "openvla-oft-small": 300_000_000}
SHIPPED = {"openvla-oft-tiny-suite": "openvla-oft-tiny-suite"}


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


def build_random_model(name: str, seed: int = 0) -> OpenVLAOFT:
    """A preset model with deterministic weights rounded to bfloat16 (what the checkpoint stores)."""
    model = OpenVLAOFT(preset(name))
    init_weights(model, seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    return model.eval()


def make_checkpoint(name: str, out_dir: str | Path, seed: int = 0) -> Path:
    """Write preset `name` with random weights to `out_dir` in the released layout (atomically)."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    out_dir = Path(out_dir)
    model = build_random_model(name, seed)
    cfg = model.cfg
    tok = build_char_tokenizer(cfg.text_vocab) if cfg.text_vocab < 32000 else None
    if tok is None:
        # A 7B-shaped random checkpoint has no LLaMA tokenizer here; a character tokenizer of the
        # same vocabulary size keeps every id in range.
        tok = build_char_tokenizer(cfg.text_vocab)

    def write_tok(d: Path) -> None:
        save_tokenizer_files(tok, d, cfg.pad_token_id)

    with atomic_dir(out_dir) as tmp:
        write_checkpoint(model, tmp, random_stats(seed, cfg.action_dim, cfg.proprio_dim), write_tok, SHARD_BYTES.get(name, 4_000_000_000))
    return out_dir


@dataclass
class ModelInfo:
    """Parameter counts per component and a short module tree."""

    name: str
    total: int
    components: dict[str, int]
    tree: list[tuple[str, str, int]]  # (path, class, params) of the top modules


def info(target: str) -> ModelInfo:
    """Counts for a preset name or a checkpoint directory (instantiated on the meta device)."""
    path = Path(target)
    cfg = read_config(path) if path.is_dir() else preset(target)
    with torch.device("meta"):
        model = OpenVLAOFT(cfg)
    comps = {c: sum(p.numel() for p in getattr(model, m).parameters()) for c, m in _MODULE_OF.items()}
    tree = []
    for name, mod in model.named_modules():
        if name.count(".") <= 2 and name and not name.split(".")[-1].isdigit():
            tree.append((name, type(mod).__name__, sum(p.numel() for p in mod.parameters())))
    return ModelInfo(cfg.name, sum(comps.values()), comps, tree)


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


def shipped_path(name: str) -> Path:
    """The directory of a checkpoint shipped inside the package."""
    if name not in SHIPPED:
        raise ConfigError(f"no shipped checkpoint {name!r}: available {', '.join(SHIPPED)}")
    path = package_data_dir() / SHIPPED[name]
    if not (path / "config.json").exists():
        raise ConfigError(f"{path}: the shipped checkpoint {name} is not in this installation; reinstall omnimodel")
    return path
