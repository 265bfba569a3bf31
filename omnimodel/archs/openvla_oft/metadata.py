"""The GGUF metadata keys the native runtime reads: sizes, epsilons, token ids and dataset statistics.

The converter merges `runtime_metadata(cfg, stats)` into the GGUF's metadata; the generated C++
reads exactly these keys (templates/cpp/omnimodel_policy.cpp.j2, `read_hparams`).
"""

from __future__ import annotations

from typing import Any

from omnimodel.archs.openvla_oft.model import (
    DINO_MEAN,
    DINO_STD,
    SIGLIP_MEAN,
    SIGLIP_STD,
    STOP_INDEX,
    OpenVLAOFTConfig,
)
from omnimodel.errors import ConfigError
from omnimodel.ggufio import names

ACTION_LN_EPS = 1e-5  # PyTorch's LayerNorm default in OFT's MLPResNet
PLACEHOLDER_TOKEN_ID = 1  # OFT's action placeholders: input id 1, embedding zeroed

# Every key the C++ reads (without the architecture prefix); required ones make omni_load fail.
REQUIRED_KEYS = (
    "vision.v.head_count",
    "vision.v.block_count",
    "vision.v2.head_count",
    "vision.v2.block_count",
    "llm.head_count",
    "llm.block_count",
)


def _tower(prefix: str, t, mean, std) -> dict[str, Any]:
    k = f"vision.{prefix}."
    return {
        k + "head_count": t.heads,
        k + "block_count": t.depth,
        k + "patch_size": t.patch,
        k + "image_size": t.image,
        k + "n_registers": t.n_registers,
        k + "class_token": bool(t.class_token),
        k + "layer_scale": bool(t.layer_scale),
        k + "layer_norm_epsilon": float(t.ln_eps),
        k + "image_mean": [float(x) for x in mean],
        k + "image_std": [float(x) for x in std],
    }


def runtime_metadata(cfg: OpenVLAOFTConfig, stats: dict | None = None) -> dict[str, Any]:
    """Metadata key -> value for the native runtime.

    `stats` is dataset_statistics.json's content (one dataset key) or one entry of it.
    """
    if stats and "action" not in stats:
        if len(stats) != 1:
            raise ConfigError(f"dataset statistics hold {len(stats)} datasets; pass the entry to use")
        stats = next(iter(stats.values()))
    meta: dict[str, Any] = {}
    meta.update(_tower("v", cfg.dino, DINO_MEAN, DINO_STD))
    meta.update(_tower("v2", cfg.siglip, SIGLIP_MEAN, SIGLIP_STD))
    meta.update(
        {
            "llm.head_count": cfg.heads,
            "llm.head_count_kv": cfg.kv_heads,
            "llm.block_count": cfg.layers,
            "llm.rms_norm_epsilon": float(cfg.rms_eps),
            "llm.rope_freq_base": float(cfg.rope_theta),
            "llm.context_length": cfg.max_positions,
            "llm.bos_token_id": cfg.bos_token_id,
            "llm.stop_token_id": STOP_INDEX,
            "llm.placeholder_token_id": PLACEHOLDER_TOKEN_ID,
            "action.chunk": cfg.chunk,
            "action.dim": cfg.action_dim,
            "action.head_blocks": cfg.head_blocks,
            "action.layer_norm_epsilon": ACTION_LN_EPS,
            "proprio.dim": cfg.proprio_dim,
            "num_images": cfg.num_images,
        }
    )
    if stats:
        action, proprio = stats["action"], stats["proprio"]
        meta.update(
            {
                "norm.action_q01": [float(x) for x in action["q01"]],
                "norm.action_q99": [float(x) for x in action["q99"]],
                "norm.action_mask": [bool(x) for x in action.get("mask", [True] * len(action["q01"]))],
                "norm.proprio_q01": [float(x) for x in proprio["q01"]],
                "norm.proprio_q99": [float(x) for x in proprio["q99"]],
            }
        )
    return {names.arch_key(k): v for k, v in meta.items()}
