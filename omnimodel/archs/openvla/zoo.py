"""OpenVLA's presets as checkpoints: random init in the released layout, parameter counts."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import torch

from omnimodel.archs.openvla.checkpoint import config_from_json, read_config, write_checkpoint
from omnimodel.archs.openvla.model import PRESETS, OpenVLA, OpenVLAConfig, init_weights, preset
from omnimodel.archs.openvla_oft.checkpoint import editable_config_json
from omnimodel.archs.overrides import SOURCE, apply_sets
from omnimodel.atomic import atomic_dir
from omnimodel.errors import ConfigError
from omnimodel.models.tokenizer import build_char_tokenizer, save_tokenizer_files
from omnimodel.models.zoo import ModelInfo, random_stats

MODULE_OF = {
    "vision": "vision_backbone",
    "projector": "projector",
    "llm": "language_model",
}  # component -> module
SHARD_BYTES = {"openvla-tiny": 4_000_000}
UNNORM_KEY = "omnimodel_random"  # the one dataset of a random checkpoint's norm_stats


def build_random_model(name: str | OpenVLAConfig, seed: int = 0) -> OpenVLA:
    """A preset (or config) model with deterministic weights rounded to bfloat16 (what the checkpoint stores)."""
    model = OpenVLA(preset(name) if isinstance(name, str) else name)
    init_weights(model, seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    return model.eval()


def random_norm_stats(seed: int, action_dim: int = 7) -> dict:
    """norm_stats of one random dataset (BOUNDS_Q99 fields and a mask with the gripper left out)."""
    return random_stats(seed, action_dim, 7, key=UNNORM_KEY)


def make_checkpoint(name: str, out_dir: str | Path, seed: int = 0, sets: tuple[str, ...] = ()) -> Path:
    """Write preset `name` with random weights to `out_dir` in the released layout (atomically).

    `sets` edit the preset's config.json first (custom sizes); the result is checked as a checkpoint's is.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    out_dir = Path(out_dir)
    cfg = preset(name)
    if sets:
        editable = {
            **editable_config_json(cfg),
            "pad_to_multiple_of": cfg.pad_to_multiple_of,
            "n_action_bins": cfg.n_action_bins,
        }
        # config.json does not carry the space token id: keep the preset's (its character tokenizer's)
        cfg = replace(config_from_json(apply_sets(editable, sets), SOURCE), space_token_id=cfg.space_token_id)
    model = build_random_model(cfg, seed)
    cfg = model.cfg
    # A random checkpoint has no LLaMA tokenizer here: a character tokenizer of the same text vocabulary.
    tok = build_char_tokenizer(cfg.text_vocab)
    with atomic_dir(out_dir) as tmp:
        write_checkpoint(
            model,
            tmp,
            random_norm_stats(seed, cfg.action_dim),
            lambda d: save_tokenizer_files(tok, d, cfg.pad_token_id),
            SHARD_BYTES.get(name, 4_000_000_000),
        )
    return out_dir


def info(target: str) -> ModelInfo:
    """Counts for a preset name or a checkpoint directory (instantiated on the meta device)."""
    path = Path(target)
    cfg = read_config(path) if path.is_dir() else preset(target)
    with torch.device("meta"):
        model = OpenVLA(cfg)
    comps = {c: sum(p.numel() for p in getattr(model, m).parameters()) for c, m in MODULE_OF.items()}
    tree = []
    for name, mod in model.named_modules():
        if name.count(".") <= 2 and name and not name.split(".")[-1].isdigit():
            tree.append((name, type(mod).__name__, sum(p.numel() for p in mod.parameters())))
    return ModelInfo(cfg.name, sum(comps.values()), comps, tree)
