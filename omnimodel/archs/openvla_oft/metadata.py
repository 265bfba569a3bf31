"""The GGUF metadata keys the native runtime reads: sizes, epsilons, token ids and dataset statistics.

The converter merges `runtime_metadata(cfg, stats)` into the GGUF's metadata; the generated C++
reads exactly these keys, each spelled once in the name table (names.KEYS, rendered into the
graph's omni_names.h).
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
from omnimodel.archs.openvla_oft.names import ARCH, TOWERS, key
from omnimodel.archs.openvla_oft.prompt import prompt_metadata
from omnimodel.errors import ConfigError
from omnimodel.ggufio.constants import arch_key

ACTION_LN_EPS = 1e-5  # PyTorch's LayerNorm default in the action head's MLPResNet
PLACEHOLDER_TOKEN_ID = 1  # the action placeholders: input id 1, embedding zeroed

# Keys the C++ requires (omni_load fails without them); the others have defaults there.
REQUIRED = ("V_HEAD_COUNT", "V_BLOCK_COUNT", "LLM_HEAD_COUNT", "LLM_BLOCK_COUNT")


def _tower(tower: str, t, mean, std) -> dict[str, Any]:
    def k(ident: str) -> str:
        return key(ident, tower=tower)

    return {
        k("V_HEAD_COUNT"): t.heads,
        k("V_BLOCK_COUNT"): t.depth,
        k("V_PATCH_SIZE"): t.patch,
        k("V_IMAGE_SIZE"): t.image,
        k("V_N_REGISTERS"): t.n_registers,
        k("V_CLASS_TOKEN"): bool(t.class_token),
        k("V_LAYER_SCALE"): bool(t.layer_scale),
        k("V_LAYER_NORM_EPS"): float(t.ln_eps),
        k("V_IMAGE_MEAN"): [float(x) for x in mean],
        k("V_IMAGE_STD"): [float(x) for x in std],
    }


def runtime_metadata(cfg: OpenVLAOFTConfig, stats: dict | None = None) -> dict[str, Any]:
    """Metadata key -> value for the native runtime, every key from the name table (names.KEYS).

    `stats` is dataset_statistics.json's content (one dataset key) or one entry of it.
    """
    if stats and "action" not in stats:
        if len(stats) != 1:
            raise ConfigError(f"dataset statistics hold {len(stats)} datasets; pass the entry to use")
        stats = next(iter(stats.values()))
    meta: dict[str, Any] = {}
    meta.update(_tower(TOWERS["featurizer"], cfg.dino, DINO_MEAN, DINO_STD))
    meta.update(_tower(TOWERS["fused_featurizer"], cfg.siglip, SIGLIP_MEAN, SIGLIP_STD))
    meta.update(
        {
            key("LLM_HEAD_COUNT"): cfg.heads,
            key("LLM_HEAD_COUNT_KV"): cfg.kv_heads,
            key("LLM_BLOCK_COUNT"): cfg.layers,
            key("LLM_RMS_EPS"): float(cfg.rms_eps),
            key("LLM_ROPE_FREQ_BASE"): float(cfg.rope_theta),
            key("LLM_CONTEXT_LENGTH"): cfg.max_positions,
            key("LLM_BOS_TOKEN_ID"): cfg.bos_token_id,
            key("LLM_STOP_TOKEN_ID"): STOP_INDEX,
            key("LLM_PLACEHOLDER_TOKEN_ID"): PLACEHOLDER_TOKEN_ID,
            key("ACTION_CHUNK"): cfg.chunk,
            key("ACTION_DIM"): cfg.action_dim,
            key("ACTION_HEAD_BLOCKS"): cfg.head_blocks,
            key("ACTION_LAYER_NORM_EPS"): ACTION_LN_EPS,
            key("PROPRIO_DIM"): cfg.proprio_dim,
            key("NUM_IMAGES"): cfg.num_images,
        }
    )
    if stats:
        action, proprio = stats["action"], stats["proprio"]
        meta.update(
            {
                key("NORM_ACTION_Q01"): [float(x) for x in action["q01"]],
                key("NORM_ACTION_Q99"): [float(x) for x in action["q99"]],
                key("NORM_ACTION_MASK"): [bool(x) for x in action.get("mask", [True] * len(action["q01"]))],
                key("NORM_PROPRIO_Q01"): [float(x) for x in proprio["q01"]],
                key("NORM_PROPRIO_Q99"): [float(x) for x in proprio["q99"]],
            }
        )
    out = {arch_key(ARCH, k): v for k, v in meta.items()}
    out.update(prompt_metadata())
    return out
