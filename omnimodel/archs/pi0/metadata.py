"""The GGUF metadata keys π0 / π0.5's native graph reads: every size, eps, RoPE base, flow settings and statistics.

Each value is written once, under the name table's key (names.KEYS), prefixed by the arch's name.
The expert shares the LLM's depth, attention geometry, eps and RoPE (openpi asserts it), so it has
no keys of its own; widths come from the tensors' shapes.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from omnimodel.archs.pi0.model import PiConfig
from omnimodel.archs.pi0.names import key
from omnimodel.archs.pi0.tokenizer import BOS_ID
from omnimodel.ggufio.constants import Keys, arch_key

NOISE_SEED = 0  # the native policy's noise stream; the analyzer's sample uses its first draw
NORM_EPS = 1e-8  # LeRobot's (our presets are LeRobot-layout checkpoints)
STATE_SLOT = "{state}"  # where the template takes the binned state (filled by the graph's prompt_text)


def arch_name(cfg: PiConfig) -> str:
    """general.architecture of a config: pi05 or pi0."""
    return "pi05" if cfg.pi05 else "pi0"


def _stats(block: dict | None, prefix: str) -> dict[str, np.ndarray]:
    # float64, as TorchPolicy normalises: the state's prompt bins then match it to the last bit
    out = {}
    for stat in ("mean", "std", "q01", "q99"):
        if block and stat in block:
            out[key(f"NORM_{prefix}_{stat.upper()}")] = np.asarray(block[stat], dtype=np.float64)
    return out


def state_in_prompt(cfg: PiConfig) -> bool:
    """Whether the policy writes the normalised state into its prompt (LeRobot π0.5; openpi π0.5 but pi05_libero)."""
    return bool(cfg.pi05 and cfg.discrete_state_input)


def runtime_metadata(cfg: PiConfig, stats: dict | None = None) -> dict[str, Any]:
    """Metadata key -> value for the native runtime, every key from the name table (names.KEYS)."""
    stats = stats or {}
    if stats and "action" not in stats and len(stats) == 1:
        stats = next(iter(stats.values()))  # {dataset: {state, action}} -> the one dataset
    state, action = stats.get("state"), stats.get("action")
    robot_action = len(next(iter(action.values()))) if action else cfg.action_dim
    robot_state = len(next(iter(state.values()))) if (state and (not cfg.pi05 or state_in_prompt(cfg))) else 0
    meta: dict[str, Any] = {
        key("V_HEAD_COUNT"): cfg.vision.heads,
        key("V_BLOCK_COUNT"): cfg.vision.depth,
        key("V_PATCH_SIZE"): cfg.vision.patch,
        key("V_IMAGE_SIZE"): cfg.vision.image,
        key("V_LAYER_NORM_EPS"): float(cfg.vision.ln_eps),
        key("LLM_HEAD_COUNT"): cfg.llm.heads,
        key("LLM_HEAD_COUNT_KV"): cfg.llm.kv_heads,
        key("LLM_HEAD_DIM"): cfg.llm.head_dim,
        key("LLM_BLOCK_COUNT"): cfg.llm.depth,
        key("LLM_RMS_EPS"): float(cfg.rms_eps),
        key("LLM_ROPE_FREQ_BASE"): float(cfg.rope_theta),
        key("LLM_VOCAB_SIZE"): cfg.vocab,
        key("LLM_BOS_TOKEN_ID"): BOS_ID,
        key("LLM_MAX_TOKEN_LEN"): cfg.max_token_len,
        key("EXPERT_ADARMS"): bool(cfg.pi05),
        key("FLOW_NUM_STEPS"): cfg.num_steps,
        key("FLOW_MIN_PERIOD"): float(cfg.min_period),
        key("FLOW_MAX_PERIOD"): float(cfg.max_period),
        key("FLOW_NOISE_SEED"): NOISE_SEED,
        key("ACTION_CHUNK"): cfg.chunk,
        key("ACTION_DIM"): cfg.action_dim,
        key("ACTION_ROBOT_DIM"): robot_action,
        key("STATE_DIM"): cfg.state_dim,
        key("STATE_ROBOT_DIM"): robot_state,
        key("NUM_IMAGES"): cfg.num_cameras,
        key("NORM_QUANTILES"): cfg.norm_mode.startswith("quantile"),
        key("NORM_EPS"): np.float64(NORM_EPS),
    }
    meta.update(_stats(state, "STATE"))
    meta.update(_stats(action, "ACTION"))
    out = {arch_key(arch_name(cfg), k): v for k, v in meta.items()}
    out.update(prompt_metadata(cfg))
    return out


def prompt_metadata(cfg: PiConfig) -> dict[str, Any]:
    """The generic prompt keys the native omni_predict_text reads, as tokenizer.prompt_text writes the prompt.

    π0 and openpi pi05_libero: the task then a newline. A π0.5 that writes the state into the prompt
    (prompt.state): "Task: {instruction}, State: {state};\nAction: ", whose {state} the graph's
    prompt_text fills from the raw state (normalised with the GGUF's statistics, 256 bins). The task
    is cleaned as LeRobot does it: π0.5 yes, π0 no (the native runtime follows LeRobot, as NORM_EPS does).
    """
    with_state = state_in_prompt(cfg)
    template = f"Task: {{instruction}}, State: {STATE_SLOT};\nAction: " if with_state else "{instruction}\n"
    return {
        Keys.Omnimodel.PROMPT_TEMPLATE: template,
        Keys.Omnimodel.PROMPT_LOWERCASE: False,
        Keys.Omnimodel.PROMPT_CLEAN: bool(cfg.pi05),
        Keys.Omnimodel.PROMPT_STATE: with_state,
        Keys.Omnimodel.PROMPT_END_TOKEN: "",
    }
