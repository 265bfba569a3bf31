"""GGUF tensor names and metadata keys: the one place they are spelled.

The LLaMA trunk follows llama.cpp (`token_embd`, `blk.N.attn_q`, ...; q/k rows permuted for
GGML's interleaved RoPE as llama.cpp's converter does). The DINOv2 tower is `v.*` and the SigLIP
tower `v2.*`, with llama.cpp's clip names (`v.blk.N.ln1`, `attn_q`, `ffn_up`, `ls1`); the towers'
fused qkv is split into three tensors. Projector `mm.*`, proprio projector `proprio.*`, action
head `act.*`.
"""

from __future__ import annotations

import re

ARCH = "openvla-oft"

# Metadata keys (prefix the architecture-specific ones with ARCH).
KEY_ARCH = "general.architecture"
KEY_NAME = "general.name"
KEY_FILE_TYPE = "general.file_type"
KEY_QUANT_METHOD = "omnimodel.quant.method"
KEY_CONFIG_JSON = "omnimodel.config_json"  # the full OpenVLAOFTConfig as JSON
KEY_NORM_STATS_JSON = "omnimodel.dataset_statistics_json"


def arch_key(name: str) -> str:
    """An architecture-specific metadata key, e.g. `openvla-oft.llm.block_count`."""
    return f"{ARCH}.{name}"


TOWER_PREFIX = {"featurizer": "v", "fused_featurizer": "v2"}

_VIT_BLOCK = {
    "norm1.weight": "ln1.weight",
    "norm1.bias": "ln1.bias",
    "attn.proj.weight": "attn_out.weight",
    "attn.proj.bias": "attn_out.bias",
    "ls1.scale_factor": "ls1.weight",
    "ls1.gamma": "ls1.weight",
    "norm2.weight": "ln2.weight",
    "norm2.bias": "ln2.bias",
    "mlp.fc1.weight": "ffn_up.weight",
    "mlp.fc1.bias": "ffn_up.bias",
    "mlp.fc2.weight": "ffn_down.weight",
    "mlp.fc2.bias": "ffn_down.bias",
    "ls2.scale_factor": "ls2.weight",
    "ls2.gamma": "ls2.weight",
}
_VIT_TOP = {
    "cls_token": "class_embd",
    "reg_token": "reg_embd",
    "pos_embed": "position_embd.weight",
    "patch_embed.proj.weight": "patch_embd.weight",
    "patch_embed.proj.bias": "patch_embd.bias",
    "norm.weight": "post_ln.weight",
    "norm.bias": "post_ln.bias",
}
_LLM_LAYER = {
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.o_proj.weight": "attn_output.weight",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "ffn_norm.weight",
}
_LLM_TOP = {
    "language_model.model.embed_tokens.weight": "token_embd.weight",
    "language_model.model.norm.weight": "output_norm.weight",
    "language_model.lm_head.weight": "output.weight",
}
_ACT_HEAD = {
    "model.layer_norm1.weight": "act.ln1.weight",
    "model.layer_norm1.bias": "act.ln1.bias",
    "model.fc1.weight": "act.fc1.weight",
    "model.fc1.bias": "act.fc1.bias",
    "model.layer_norm2.weight": "act.ln2.weight",
    "model.layer_norm2.bias": "act.ln2.bias",
    "model.fc2.weight": "act.fc2.weight",
    "model.fc2.bias": "act.fc2.bias",
}


def gguf_names(key: str) -> list[str]:
    """GGUF tensor name(s) for a checkpoint key; a fused qkv gives three (q, k, v).

    `key` is a full model key (`vision_backbone.featurizer.blocks.0.attn.qkv.weight`,
    `language_model.model.layers.3.mlp.up_proj.weight`), an action-head key prefixed `action_head.`
    or a proprio-projector key prefixed `proprio_projector.`. Unknown parameters of a known role keep
    their relative name under the role's prefix (`generic_name`); other unknown keys raise KeyError.
    """
    if key in _LLM_TOP:
        return [_LLM_TOP[key]]
    m = re.fullmatch(r"language_model\.model\.layers\.(\d+)\.(.+)", key)
    if m and m.group(2) in _LLM_LAYER:
        return [f"blk.{m.group(1)}.{_LLM_LAYER[m.group(2)]}"]
    m = re.fullmatch(r"vision_backbone\.(featurizer|fused_featurizer)\.(.+)", key)
    if m:
        prefix, rest = TOWER_PREFIX[m.group(1)], m.group(2)
        if rest in _VIT_TOP:
            return [f"{prefix}.{_VIT_TOP[rest]}"]
        b = re.fullmatch(r"blocks\.(\d+)\.(.+)", rest)
        if b:
            blk, leaf = b.group(1), b.group(2)
            if leaf in ("attn.qkv.weight", "attn.qkv.bias"):
                suffix = leaf.rsplit(".", 1)[1]
                return [f"{prefix}.blk.{blk}.attn_{x}.{suffix}" for x in "qkv"]
            if leaf in _VIT_BLOCK:
                return [f"{prefix}.blk.{blk}.{_VIT_BLOCK[leaf]}"]
        if rest.startswith("attn_pool."):
            return [f"{prefix}.attn_pool.{rest[len('attn_pool.'):]}"]
    m = re.fullmatch(r"projector\.fc(\d)\.(weight|bias)", key)
    if m:
        return [f"mm.fc{m.group(1)}.{m.group(2)}"]
    m = re.fullmatch(r"proprio_projector\.fc(\d)\.(weight|bias)", key)
    if m:
        return [f"proprio.fc{m.group(1)}.{m.group(2)}"]
    if key.startswith("action_head."):
        rest = key[len("action_head.") :]
        if rest in _ACT_HEAD:
            return [_ACT_HEAD[rest]]
        b = re.fullmatch(r"model\.mlp_resnet_blocks\.(\d+)\.ffn\.(0|1)\.(weight|bias)", rest)
        if b:
            kind = "ln" if b.group(2) == "0" else "fc"
            return [f"act.blk.{b.group(1)}.{kind}.{b.group(3)}"]
    fallback = generic_name(key)
    if fallback is not None:
        return [fallback]
    raise KeyError(f"no GGUF name for checkpoint key {key!r}")


# Module prefixes whose unknown parameters keep their relative name under the role's GGUF prefix,
# so a module of a new class in a known role (written by the agent) needs no naming change here.
_GENERIC_PREFIXES = (
    (r"proprio_projector\.(.+)", "proprio.{0}"),
    (r"projector\.(.+)", "mm.{0}"),
    (r"action_head\.(.+)", "act.{0}"),
    (r"language_model\.model\.layers\.(\d+)\.(.+)", "blk.{0}.{1}"),
    (r"vision_backbone\.featurizer\.blocks\.(\d+)\.(.+)", "v.blk.{0}.{1}"),
    (r"vision_backbone\.fused_featurizer\.blocks\.(\d+)\.(.+)", "v2.blk.{0}.{1}"),
)
GGUF_NAME_MAX = 63  # GGML_MAX_NAME (64) with its terminating NUL


def generic_name(key: str) -> str | None:
    """`proprio_projector.ls.scale_factor` -> `proprio.ls.scale_factor`: the fallback for unknown keys of a known role."""
    for pattern, target in _GENERIC_PREFIXES:
        m = re.fullmatch(pattern, key)
        if m:
            name = target.format(*m.groups())
            return name if len(name) <= GGUF_NAME_MAX else None
    return None


def component_of(gguf_name: str) -> str:
    """The component a GGUF tensor belongs to: vision, projector, llm, action_head, proprio_projector."""
    head = gguf_name.split(".", 1)[0]
    if head in ("v", "v2"):
        return "vision"
    if head == "mm":
        return "projector"
    if head == "act":
        return "action_head"
    if head == "proprio":
        return "proprio_projector"
    return "llm"


def is_quantizable(gguf_name: str, shape: tuple[int, ...]) -> bool:
    """Whether a tensor is a 2-D weight matrix of the vision towers or the LLM (the quantized set).

    Norms, biases, LayerScale, embeddings of positions/CLS/registers, the patch-embedding conv,
    the projector, proprio projector and action head stay in full precision.
    """
    if len(shape) != 2 or not gguf_name.endswith(".weight"):
        return False
    comp = component_of(gguf_name)
    if comp == "llm":
        return True
    if comp == "vision":
        return ".blk." in gguf_name and not gguf_name.split(".")[-2].startswith(("ln", "ls"))
    return False
