"""This arch's presets as checkpoints: random init in the released layout, parameter counts, shipped policies."""

from __future__ import annotations

from pathlib import Path

import torch

from omnimodel.archs.openvla_oft.checkpoint import (
    config_from_json,
    editable_config_json,
    read_config,
    write_checkpoint,
)
from omnimodel.archs.openvla_oft.model import PRESETS, OpenVLAOFT, OpenVLAOFTConfig, init_weights, preset
from omnimodel.archs.overrides import SOURCE, apply_sets
from omnimodel.atomic import atomic_dir
from omnimodel.errors import ConfigError
from omnimodel.models.tokenizer import build_char_tokenizer, save_tokenizer_files
from omnimodel.models.zoo import ModelInfo, random_stats

# component -> top module
MODULE_OF = {
    "vision": "vision_backbone",
    "projector": "projector",
    "llm": "language_model",
    "action_head": "action_head",
    "proprio_projector": "proprio_projector",
}
SHARD_BYTES = {"openvla-oft-tiny": 4_000_000, "openvla-oft-small": 300_000_000}
SHIPPED_DIR = Path(__file__).resolve().parent / "zoo"  # package data: trained policies shipped with omnimodel
SHIPPED = ("openvla-oft-tiny-suite",)


def build_random_model(name: str | OpenVLAOFTConfig, seed: int = 0) -> OpenVLAOFT:
    """A preset (or config) model with deterministic weights rounded to bfloat16 (what the checkpoint stores)."""
    model = OpenVLAOFT(preset(name) if isinstance(name, str) else name)
    init_weights(model, seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(p.to(torch.bfloat16).float())
    return model.eval()


def make_checkpoint(name: str, out_dir: str | Path, seed: int = 0, sets: tuple[str, ...] = ()) -> Path:
    """Write preset `name` with random weights to `out_dir` in the released layout (atomically).

    `sets` edit the preset's config.json first (`text_config.num_hidden_layers=4`,
    `omnimodel_towers.1.depth=6`); the result is checked as a checkpoint's config.json is.
    """
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    out_dir = Path(out_dir)
    cfg = preset(name)
    if sets:
        cfg = config_from_json(apply_sets(editable_config_json(cfg), sets), SOURCE)
    model = build_random_model(cfg, seed)
    cfg = model.cfg
    # A 7B-shaped random checkpoint has no LLaMA tokenizer here; a character tokenizer of the same
    # vocabulary size keeps every id in range.
    tok = build_char_tokenizer(cfg.text_vocab)

    def write_tok(d: Path) -> None:
        save_tokenizer_files(tok, d, cfg.pad_token_id)

    with atomic_dir(out_dir) as tmp:
        write_checkpoint(
            model,
            tmp,
            random_stats(seed, cfg.action_dim, cfg.proprio_dim),
            write_tok,
            SHARD_BYTES.get(name, 4_000_000_000),
        )
    return out_dir


def info(target: str) -> ModelInfo:
    """Counts for a preset name or a checkpoint directory (instantiated on the meta device)."""
    path = Path(target)
    cfg = read_config(path) if path.is_dir() else preset(target)
    with torch.device("meta"):
        model = OpenVLAOFT(cfg)
    comps = {c: sum(p.numel() for p in getattr(model, m).parameters()) for c, m in MODULE_OF.items()}
    tree = []
    for name, mod in model.named_modules():
        if name.count(".") <= 2 and name and not name.split(".")[-1].isdigit():
            tree.append((name, type(mod).__name__, sum(p.numel() for p in mod.parameters())))
    return ModelInfo(cfg.name, sum(comps.values()), comps, tree)
