"""π0 / π0.5 presets as checkpoints: deterministic random weights in LeRobot's layout, parameter counts."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import torch
from torch import nn

from omnimodel.archs.pi0.checkpoint import (
    SIDE_KEYS,
    Stats,
    config_from_json,
    config_to_json,
    read_config,
    side_to_json,
    write_checkpoint,
)
from omnimodel.archs.pi0.model import PI0, PRESETS, AdaRMSNorm, PiConfig, RMSNorm, count_parameters, preset
from omnimodel.archs.pi0.tokenizer import build_char_tokenizer, save_tokenizer_files
from omnimodel.atomic import atomic_dir
from omnimodel.errors import ConfigError
from omnimodel.models.zoo import ModelInfo

ROBOT_STATE_DIM = 8  # LIBERO: eef pos (3) + axis-angle (3) + gripper qpos (2)
ROBOT_ACTION_DIM = 7  # LIBERO: 6 EEF deltas + gripper
TINY = ("pi05-tiny", "pi0-tiny")
SHIPPED_DIR = Path(__file__).resolve().parent / "zoo"  # package data: trained policies shipped with omnimodel
SHIPPED = ("pi05-tiny-suite",)


def init_weights(model: PI0, seed: int = 0) -> None:
    """Deterministic weights that keep activations O(1): 1/sqrt(fan_in) matrices, small norms and biases.

    Norm weights and adaRMS dense layers are non-zero (upstream zero-inits them) so a test sees
    the (1 + w) convention and the time conditioning.
    """
    gen = torch.Generator().manual_seed(seed)
    kinds = {name: type(m) for name, m in model.named_modules()}
    with torch.no_grad():
        for name, p in model.named_parameters():
            owner, _, pname = name.rpartition(".")
            kind = kinds[owner]
            parent = kinds.get(owner.rpartition(".")[0])
            noise = torch.randn(p.shape, generator=gen)
            if kind is nn.LayerNorm:
                p.copy_((1.0 if pname == "weight" else 0.0) + 0.05 * noise)
            elif kind is RMSNorm:
                p.copy_(0.1 * noise)
            elif parent is AdaRMSNorm:
                p.copy_(0.1 * noise / (math.sqrt(p.shape[1]) if p.dim() > 1 else 1.0))
            elif pname == "bias":
                p.copy_(0.02 * noise)
            elif kind is nn.Embedding:
                p.copy_(noise / math.sqrt(p.shape[1]))
            else:
                p.copy_(noise / math.sqrt(p[0].numel()))


def build_random_model(name: str, seed: int = 0, cfg: PiConfig | None = None) -> PI0:
    """A preset model (or `cfg`, a preset with custom sizes) with deterministic weights.

    fp32 for the tiny presets; the full-size ones are built on the meta device and materialised in
    bf16 (6.7 GB, not 13.4), the weights drawn in fp32 and rounded on copy, as their checkpoint stores.
    """
    cfg = cfg or preset(name)
    if name in TINY:
        model = PI0(cfg)
    else:
        with torch.device("meta"):
            model = PI0(cfg).to(torch.bfloat16)
        model = model.to_empty(device="cpu")
    init_weights(model, seed)
    return model.eval()


def config_with_sets(name: str, sets: tuple[str, ...]) -> PiConfig:
    """Preset `name` with `KEY=VALUE` edits of its config.json and omnimodel.json (`chunk_size=20`, `omnimodel_sizes.llm.depth=4`).

    The keys of both files are one namespace (ours all start with `omnimodel_`). Values are JSON
    (else strings); the edited config goes through the same checks as a checkpoint's.
    """
    base = preset(name)
    raw = {**config_to_json(base), **side_to_json(base, sizes=True)}
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. omnimodel_sizes.llm.depth=4")
        node, parts = raw, key.split(".")
        for part in parts[:-1]:
            if not isinstance(node.get(part), dict):
                raise ConfigError(
                    f"--set {key}: {name}'s config.json has no section {part!r}; fix the --set key"
                )
            node = node[part]
        if parts[-1] not in node or key == "type":
            raise ConfigError(f"--set {key}: not a settable key of {name}'s config.json; fix the --set key")
        try:
            node[parts[-1]] = json.loads(value)
        except ValueError:
            node[parts[-1]] = value
    side = {k: raw.pop(k) for k in SIDE_KEYS}
    return config_from_json(raw, "--set", side=side)


def random_stats(
    seed: int = 0, state_dim: int = ROBOT_STATE_DIM, action_dim: int = ROBOT_ACTION_DIM
) -> Stats:
    """Plausible LIBERO-sized statistics (mean, std, min, max, q01, q99), deterministic per seed."""
    rng = np.random.default_rng(seed + 1)

    def block(dim: int) -> dict[str, np.ndarray]:
        lo, hi = -rng.uniform(0.5, 1.0, dim), rng.uniform(0.5, 1.0, dim)
        return {
            "mean": (lo + hi) / 2,
            "std": (hi - lo) / 4,
            "min": lo * 1.1,
            "max": hi * 1.1,
            "q01": lo,
            "q99": hi,
        }

    return Stats(state=block(state_dim), action=block(action_dim), source="random")


def make_checkpoint(name: str, out_dir: str | Path, seed: int = 0, sets: tuple[str, ...] = ()) -> Path:
    """Write preset `name` (with `sets` edits of its config.json) with random weights in LeRobot's layout, atomically."""
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    out_dir = Path(out_dir)
    model = build_random_model(name, seed, config_with_sets(name, sets) if sets else None)
    cfg = model.cfg
    tok = build_char_tokenizer(cfg.vocab)
    with atomic_dir(out_dir) as tmp:
        write_checkpoint(
            model,
            tmp,
            random_stats(seed),
            lambda d: save_tokenizer_files(tok, d, cfg.max_token_len),
            torch.float32 if name in TINY else torch.bfloat16,
        )
    return out_dir


def info(target: str) -> ModelInfo:
    """Counts per component for a preset name or a checkpoint directory (meta device; no lm_heads)."""
    path = Path(target)
    cfg = read_config(path) if path.is_dir() else preset(target)
    comps = count_parameters(cfg)
    with torch.device("meta"):
        model = PI0(cfg)
    tree = []
    for mname, mod in model.named_modules():
        if mname and mname.count(".") <= 3 and not mname.split(".")[-1].isdigit():
            tree.append((mname, type(mod).__name__, sum(p.numel() for p in mod.parameters())))
    return ModelInfo(cfg.name, sum(comps.values()), comps, tree)
