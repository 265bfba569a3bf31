"""π0 / π0.5 name table: every metadata key and GGUF tensor name their native graph reads, spelled once.

gguf-py style, shared by both archs (the metadata prefix is the arch's name, `pi0.` or `pi05.`).
Naming follows llama.cpp where it has a name: the PaliGemma LLM `token_embd`, `blk.N.attn_q`, ...;
the SigLIP tower llama.cpp's clip names (`v.blk.N.ln1`, `attn_q`, `attn_out`, `ffn_up`, `v.post_ln`);
the projector `mm.fc`. The action expert sits under `aex.` with the LLM's suffixes (its adaRMS norms
are `attn_norm_ada` / `ffn_norm_ada` / `aex.output_norm_ada`: a Dense of the time condition, no
scale vector); the flow-matching projections keep their checkpoint names.

Checkpoint keys are openpi PI0Pytorch's (LeRobot's minus `model.`; a leading `model.` is accepted,
as is the older `paligemma.vision_tower` layout). Dead weights (never needed for actions) are named
nothing, so they are neither stored nor computed: the expert's `lm_head`, the LLM's final norm and
PaliGemma's `lm_head` (the tied copy of `embed_tokens`); the last PaliGemma layer's q/o projections,
MLP and post-attention norm are dead too, but which layer is last depends on the config: see
`dead_keys`. Within a role the suffixes are the skills' tensor_map.yaml `gguf` column.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from omnimodel.ggufio.constants import GGUF_NAME_MAX, HF_DECODER_LAYER

ARCHS = ("pi05", "pi0")  # general.architecture of each, and the prefix of every key below

KEYS: dict[str, str] = {
    # SigLIP tower
    "V_HEAD_COUNT": "vision.head_count",
    "V_BLOCK_COUNT": "vision.block_count",
    "V_PATCH_SIZE": "vision.patch_size",
    "V_IMAGE_SIZE": "vision.image_size",
    "V_LAYER_NORM_EPS": "vision.layer_norm_epsilon",
    # PaliGemma LLM (the expert shares its attention geometry, depth, eps and RoPE)
    "LLM_HEAD_COUNT": "llm.head_count",
    "LLM_HEAD_COUNT_KV": "llm.head_count_kv",
    "LLM_HEAD_DIM": "llm.head_dim",
    "LLM_BLOCK_COUNT": "llm.block_count",
    "LLM_RMS_EPS": "llm.rms_norm_epsilon",
    "LLM_ROPE_FREQ_BASE": "llm.rope_freq_base",
    "LLM_VOCAB_SIZE": "llm.vocab_size",
    "LLM_BOS_TOKEN_ID": "llm.bos_token_id",
    "LLM_MAX_TOKEN_LEN": "llm.max_token_len",
    # action expert and flow matching
    "EXPERT_ADARMS": "expert.adarms",  # true: time through adaRMS (π0.5); false: state token + action-time MLP (π0)
    "FLOW_NUM_STEPS": "flow.num_steps",
    "FLOW_MIN_PERIOD": "flow.min_period",
    "FLOW_MAX_PERIOD": "flow.max_period",
    "FLOW_NOISE_SEED": "flow.noise_seed",
    "ACTION_CHUNK": "action.chunk",
    "ACTION_DIM": "action.dim",  # padded (32): the expert's action width
    "ACTION_ROBOT_DIM": "action.robot_dim",  # the robot's dims: un-normalised and returned
    "STATE_DIM": "state.dim",  # padded state width (π0's state_proj input)
    "STATE_ROBOT_DIM": "state.robot_dim",  # the robot's state dims (0: no continuous state input)
    "NUM_IMAGES": "num_images",  # camera slots, in order
    # the policy boundary
    "NORM_QUANTILES": "norm.quantiles",  # true: q01/q99 to [-1, 1]; false: mean/std
    "NORM_EPS": "norm.epsilon",
    "NORM_STATE_MEAN": "norm.state_mean",
    "NORM_STATE_STD": "norm.state_std",
    "NORM_STATE_Q01": "norm.state_q01",
    "NORM_STATE_Q99": "norm.state_q99",
    "NORM_ACTION_MEAN": "norm.action_mean",
    "NORM_ACTION_STD": "norm.action_std",
    "NORM_ACTION_Q01": "norm.action_q01",
    "NORM_ACTION_Q99": "norm.action_q99",
}

_PG = r"(?:model\.)?paligemma_with_expert\.paligemma\."
_VISION = _PG + r"(?:model\.)?vision_tower\.vision_model"
_LLM = _PG + r"(?:model\.)?language_model"
_EXPERT = r"(?:model\.)?paligemma_with_expert\.gemma_expert"
_TOP = r"(?:model\.)?"

_SIGLIP_LAYER = {
    "layer_norm1.weight": ("ln1.weight",),
    "layer_norm1.bias": ("ln1.bias",),
    "self_attn.q_proj.weight": ("attn_q.weight",),
    "self_attn.q_proj.bias": ("attn_q.bias",),
    "self_attn.k_proj.weight": ("attn_k.weight",),
    "self_attn.k_proj.bias": ("attn_k.bias",),
    "self_attn.v_proj.weight": ("attn_v.weight",),
    "self_attn.v_proj.bias": ("attn_v.bias",),
    "self_attn.out_proj.weight": ("attn_out.weight",),
    "self_attn.out_proj.bias": ("attn_out.bias",),
    "layer_norm2.weight": ("ln2.weight",),
    "layer_norm2.bias": ("ln2.bias",),
    "mlp.fc1.weight": ("ffn_up.weight",),
    "mlp.fc1.bias": ("ffn_up.bias",),
    "mlp.fc2.weight": ("ffn_down.weight",),
    "mlp.fc2.bias": ("ffn_down.bias",),
}
_SIGLIP_EMBD = {
    "patch_embedding.weight": ("patch_embd.weight",),
    "patch_embedding.bias": ("patch_embd.bias",),
    "position_embedding.weight": ("position_embd.weight",),
}
_SIGLIP_POST = {"weight": ("post_ln.weight",), "bias": ("post_ln.bias",)}
_PROJECTOR = {"linear.weight": ("fc.weight",), "linear.bias": ("fc.bias",)}
_GEMMA_LAYER = {
    **HF_DECODER_LAYER,
    # π0.5's expert norms are adaRMS: a Dense(cond) per norm instead of a scale vector
    "input_layernorm.dense.weight": ("attn_norm_ada.weight",),
    "input_layernorm.dense.bias": ("attn_norm_ada.bias",),
    "post_attention_layernorm.dense.weight": ("ffn_norm_ada.weight",),
    "post_attention_layernorm.dense.bias": ("ffn_norm_ada.bias",),
}
_EXPERT_TOP = {
    "model.norm.weight": ("output_norm.weight",),
    "model.norm.dense.weight": ("output_norm_ada.weight",),
    "model.norm.dense.bias": ("output_norm_ada.bias",),
}
FLOW_MODULES = (
    "action_in_proj",
    "action_out_proj",
    "time_mlp_in",
    "time_mlp_out",
    "state_proj",
    "action_time_mlp_in",
    "action_time_mlp_out",
)
_FLOW = {"weight": ("weight",), "bias": ("bias",)}


@dataclass(frozen=True)
class Role:
    """Checkpoint modules of one kind: where they sit, their GGUF prefix and their parameters' suffixes."""

    ident: str  # the prefix's TENSORS identifier; "" for tensors named without one
    module: str  # regex of the module path; group `bid` fills the prefix
    prefix: str  # GGUF name prefix, with {bid}
    params: dict[str, tuple[str, ...]]  # parameter (relative to the module) -> GGUF suffix(es)
    component: str  # the component its tensors count under (bits per weight, quantizable set)
    generic: bool = True  # unknown parameters keep their relative name under the prefix


ROLES: tuple[Role, ...] = (
    Role("V_BLK", _VISION + r"\.encoder\.layers\.(?P<bid>\d+)", "v.blk.{bid}.", _SIGLIP_LAYER, "vision"),
    Role("V", _VISION + r"\.embeddings", "v.", _SIGLIP_EMBD, "vision", generic=False),
    Role("V_POST", _VISION + r"\.post_layernorm", "v.", _SIGLIP_POST, "vision", generic=False),
    Role("MM", _PG + r"(?:model\.)?multi_modal_projector", "mm.", _PROJECTOR, "projector"),
    Role("BLK", _LLM + r"\.layers\.(?P<bid>\d+)", "blk.{bid}.", _GEMMA_LAYER, "llm"),
    Role("", _LLM, "", {"embed_tokens.weight": ("token_embd.weight",)}, "llm", generic=False),
    Role("AEX_BLK", _EXPERT + r"\.model\.layers\.(?P<bid>\d+)", "aex.blk.{bid}.", _GEMMA_LAYER, "expert"),
    Role("AEX", _EXPERT, "aex.", _EXPERT_TOP, "expert", generic=False),
    Role(
        "FLOW",
        _TOP + r"(?P<flow>" + "|".join(FLOW_MODULES) + ")",
        "{flow}.",
        _FLOW,
        "flow_head",
        generic=False,
    ),
)

# Keys in the checkpoint that no action depends on (whatever the depth): named nothing.
DEAD_KEYS = re.compile(
    r"(?:" + _EXPERT + r"\.lm_head\.weight|" + _LLM + r"\.norm\.weight|" + _PG + r"lm_head\.weight)"
)
_LAST_LAYER_DEAD = ("self_attn.q_proj", "self_attn.o_proj", "mlp.", "post_attention_layernorm")


def dead_keys(keys, n_layers: int) -> set[str]:
    """The keys of `keys` never needed for actions at this LLM depth: DEAD_KEYS and the last layer's q/o/MLP/post-attn norm.

    The last PaliGemma layer only feeds the expert its K and V; nothing reads its output.
    """
    last = re.compile(_LLM + rf"\.layers\.{n_layers - 1}\.(?P<param>.+)")
    out = set()
    for k in keys:
        m = last.fullmatch(k)
        if DEAD_KEYS.fullmatch(k) or (m and m.group("param").startswith(_LAST_LAYER_DEAD)):
            out.add(k)
    return out


def _ident(suffix: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", suffix.upper())


def _tensors() -> dict[str, str]:
    out: dict[str, str] = {}
    for role in ROLES:
        if role.ident == "FLOW":
            out.update({_ident(f"{m}.{p}"): f"{m}.{p}" for m in FLOW_MODULES for p in ("weight", "bias")})
            continue
        if role.ident and role.ident != "V_POST":
            out[role.ident] = role.prefix
        ident = "V" if role.ident == "V_POST" else role.ident
        for suffixes in role.params.values():
            for s in suffixes:
                out["_".join(x for x in (ident, _ident(s)) if x)] = role.prefix + s
    return out


TENSORS: dict[str, str] = _tensors()


def _fill(prefix: str, m: re.Match) -> str:
    return prefix.format(**{k: v for k, v in m.groupdict().items() if v is not None and k != "param"})


def module_prefix(module: str) -> str | None:
    """The GGUF prefix of the role a checkpoint module sits in (`...language_model.layers.3` -> `blk.3.`), or None."""
    if module == "":
        return ""
    for role in ROLES:
        m = re.fullmatch(role.module, module)
        if m:
            return _fill(role.prefix, m)
    return None


def gguf_names(key: str) -> list[str]:
    """GGUF tensor name(s) of a checkpoint key: one, or none for a dead key (see DEAD_KEYS)."""
    if DEAD_KEYS.fullmatch(key):
        return []
    for role in ROLES:
        m = re.fullmatch(role.module + r"\.(?P<param>.+)", key)
        if m and m.group("param") in role.params:
            return [_fill(role.prefix, m) + s for s in role.params[m.group("param")]]
    for role in ROLES:
        m = re.fullmatch(role.module + r"\.(?P<param>.+)", key)
        if m and role.generic:
            name = _fill(role.prefix, m) + m.group("param")
            if len(name) <= GGUF_NAME_MAX:
                return [name]
    raise KeyError(f"no GGUF name for checkpoint key {key!r}")


_HEADS = {"v": "vision", "mm": "projector", "blk": "llm", "token_embd": "llm", "aex": "expert"}


def component_of(gguf_name: str) -> str:
    """The component a GGUF tensor counts under: vision, projector, llm, expert, flow_head."""
    return _HEADS.get(gguf_name.split(".", 1)[0], "flow_head")


def is_quantizable(gguf_name: str, shape: tuple[int, ...]) -> bool:
    """2-D weight matrices of the SigLIP blocks, the LLM and the expert blocks (the quantized set).

    Norms, adaRMS modulation Dense, biases, positions, the patch kernel, the projector and the
    flow-matching projections stay in full precision (openpi keeps them fp32 as well).
    """
    if len(shape) != 2 or not gguf_name.endswith(".weight") or "_ada." in gguf_name:
        return False
    comp = component_of(gguf_name)
    if comp in ("llm", "expert"):
        return ".blk." in gguf_name or gguf_name.startswith(("blk.", "token_embd"))
    if comp == "vision":
        return gguf_name.startswith("v.blk.") and not gguf_name.split(".")[-2].startswith("ln")
    return False


def key(ident: str) -> str:
    """A metadata key of KEYS without the arch prefix."""
    return KEYS[ident]


def tensor(ident: str, **fill) -> str:
    """A tensor name of TENSORS, placeholders filled: tensor("BLK_ATTN_Q_WEIGHT", bid=0) is blk.0.attn_q.weight."""
    return TENSORS[ident].format(**fill)


# The skills the graph calls, in the order their functions are emitted (ada_rms_norm before the layer that uses it).
GRAPH_SKILLS = (
    "patch_embedding",
    "siglip_encoder_layer",
    "ada_rms_norm",
    "gemma_decoder_layer",
    "flow_time_mlp",
    "flow_euler_denoise",
)
