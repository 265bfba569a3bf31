"""The GGUF metadata keys OpenVLA's native graph reads: tower and trunk sizes, de-tokeniser and BOUNDS_Q99 stats."""

from __future__ import annotations

from typing import Any

from omnimodel.archs.openvla.model import STOP_INDEX, OpenVLAConfig
from omnimodel.archs.openvla.names import ARCH, TOWERS, key
from omnimodel.archs.openvla_oft.metadata import _tower  # the towers' keys are OFT's, spelled once there
from omnimodel.archs.openvla_oft.prompt import prompt_metadata
from omnimodel.errors import ConfigError
from omnimodel.ggufio.constants import arch_key
from omnimodel.models.preprocess import DINO_MEAN, DINO_STD, SIGLIP_MEAN, SIGLIP_STD


def action_stats(stats: dict | None) -> dict | None:
    """The `action` block (q01, q99, mask) of one dataset: `stats` is norm_stats, one entry of it, or None."""
    if not stats:
        return None
    if "action" not in stats:
        if len(stats) != 1:
            raise ConfigError(f"norm_stats hold {len(stats)} datasets ({', '.join(stats)}); pass unnorm_key")
        stats = next(iter(stats.values()))
    return stats["action"]


def runtime_metadata(cfg: OpenVLAConfig, stats: dict | None = None) -> dict[str, Any]:
    """Metadata key -> value for the native runtime, every key from the name table (names.KEYS)."""
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
            key("LLM_VOCAB_SIZE"): cfg.vocab,
            key("LLM_TEXT_VOCAB_SIZE"): cfg.text_vocab,
            key("ACTION_DIM"): cfg.action_dim,
            key("ACTION_N_BINS"): cfg.n_action_bins,
            key("NUM_IMAGES"): cfg.num_images,
        }
    )
    action = action_stats(stats)
    if action:
        meta.update(
            {
                key("NORM_ACTION_Q01"): [float(x) for x in action["q01"]],
                key("NORM_ACTION_Q99"): [float(x) for x in action["q99"]],
                key("NORM_ACTION_MASK"): [bool(x) for x in action.get("mask", [True] * len(action["q01"]))],
            }
        )
    out = {arch_key(ARCH, k): v for k, v in meta.items()}
    out.update(prompt_metadata())
    return out
