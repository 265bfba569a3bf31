"""OpenVLA-OFT's name table: every metadata key and GGUF tensor name its graph reads, spelled once.

gguf-py style. `KEYS` maps a C++ identifier to a metadata key (without the `openvla-oft.` prefix;
`{tower}` is v for DINOv2, v2 for SigLIP). `TENSORS` maps one to a tensor name or a role prefix
(`{bid}` a block index, `{tower}` the tower). omnimodel.codegen.names_header renders both into the
run's omni_names.h; `gguf_names` (checkpoint key -> GGUF names) and the runtime metadata are built
from the same entries.

Naming follows llama.cpp: the trunk `token_embd`, `blk.N.attn_q`, ... (q/k rows permuted for
GGML's RoPE by the converter), the towers llama.cpp's clip names (`v.blk.N.ln1`, `attn_q`,
`ffn_up`, `ls1`) with the fused qkv split in three; projector `mm.*`, proprio projector
`proprio.*`, action head `act.*`. Within a role the suffixes are the skills' tensor_map.yaml
`gguf` column (tests/test_names.py keeps the two in step).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from omnimodel.ggufio.constants import GGUF_NAME_MAX, HF_DECODER_LAYER

ARCH = "openvla-oft"  # general.architecture, and the prefix of every key below

KEYS: dict[str, str] = {
    # vision towers
    "V_HEAD_COUNT": "vision.{tower}.head_count",
    "V_BLOCK_COUNT": "vision.{tower}.block_count",
    "V_PATCH_SIZE": "vision.{tower}.patch_size",
    "V_IMAGE_SIZE": "vision.{tower}.image_size",
    "V_N_REGISTERS": "vision.{tower}.n_registers",
    "V_CLASS_TOKEN": "vision.{tower}.class_token",
    "V_LAYER_SCALE": "vision.{tower}.layer_scale",
    "V_LAYER_NORM_EPS": "vision.{tower}.layer_norm_epsilon",
    "V_IMAGE_MEAN": "vision.{tower}.image_mean",
    "V_IMAGE_STD": "vision.{tower}.image_std",
    # LLaMA trunk
    "LLM_HEAD_COUNT": "llm.head_count",
    "LLM_HEAD_COUNT_KV": "llm.head_count_kv",
    "LLM_BLOCK_COUNT": "llm.block_count",
    "LLM_RMS_EPS": "llm.rms_norm_epsilon",
    "LLM_ROPE_FREQ_BASE": "llm.rope_freq_base",
    "LLM_CONTEXT_LENGTH": "llm.context_length",
    "LLM_BOS_TOKEN_ID": "llm.bos_token_id",
    "LLM_STOP_TOKEN_ID": "llm.stop_token_id",
    "LLM_PLACEHOLDER_TOKEN_ID": "llm.placeholder_token_id",
    # action head, proprio, policy boundary
    "ACTION_CHUNK": "action.chunk",
    "ACTION_DIM": "action.dim",
    "ACTION_HEAD_BLOCKS": "action.head_blocks",
    "ACTION_LAYER_NORM_EPS": "action.layer_norm_epsilon",
    "PROPRIO_DIM": "proprio.dim",
    "NUM_IMAGES": "num_images",
    "NORM_ACTION_Q01": "norm.action_q01",
    "NORM_ACTION_Q99": "norm.action_q99",
    "NORM_ACTION_MASK": "norm.action_mask",
    "NORM_PROPRIO_Q01": "norm.proprio_q01",
    "NORM_PROPRIO_Q99": "norm.proprio_q99",
}

# The two vision towers: checkpoint module -> the `{tower}` value of their names and keys.
TOWERS = {"featurizer": "v", "fused_featurizer": "v2"}

_VIT_TOP = {
    "cls_token": ("class_embd",),
    "reg_token": ("reg_embd",),
    "pos_embed": ("position_embd.weight",),
    "patch_embed.proj.weight": ("patch_embd.weight",),
    "patch_embed.proj.bias": ("patch_embd.bias",),
    "norm.weight": ("post_ln.weight",),
    "norm.bias": ("post_ln.bias",),
}
_VIT_BLOCK = {
    "norm1.weight": ("ln1.weight",),
    "norm1.bias": ("ln1.bias",),
    "attn.qkv.weight": ("attn_q.weight", "attn_k.weight", "attn_v.weight"),  # fused qkv: rows split in three
    "attn.qkv.bias": ("attn_q.bias", "attn_k.bias", "attn_v.bias"),
    "attn.proj.weight": ("attn_out.weight",),
    "attn.proj.bias": ("attn_out.bias",),
    "ls1.scale_factor": ("ls1.weight",),
    "ls1.gamma": ("ls1.weight",),  # timm's other spelling of LayerScale
    "norm2.weight": ("ln2.weight",),
    "norm2.bias": ("ln2.bias",),
    "mlp.fc1.weight": ("ffn_up.weight",),
    "mlp.fc1.bias": ("ffn_up.bias",),
    "mlp.fc2.weight": ("ffn_down.weight",),
    "mlp.fc2.bias": ("ffn_down.bias",),
    "ls2.scale_factor": ("ls2.weight",),
    "ls2.gamma": ("ls2.weight",),
}
_LLM_TOP = {
    "model.embed_tokens.weight": ("token_embd.weight",),
    "model.norm.weight": ("output_norm.weight",),
    "lm_head.weight": ("output.weight",),
}
_LLM_LAYER = dict(HF_DECODER_LAYER)
_PROJECTOR = {f"fc{i}.{p}": (f"fc{i}.{p}",) for i in (1, 2, 3) for p in ("weight", "bias")}
_PROPRIO = {f"fc{i}.{p}": (f"fc{i}.{p}",) for i in (1, 2) for p in ("weight", "bias")}
_ACT_HEAD = {
    f"model.{src}.{p}": (f"{dst}.{p}",)
    for src, dst in (("layer_norm1", "ln1"), ("fc1", "fc1"), ("layer_norm2", "ln2"), ("fc2", "fc2"))
    for p in ("weight", "bias")
}
_ACT_BLOCK = {
    f"ffn.{i}.{p}": (f"{dst}.{p}",) for i, dst in (("0", "ln"), ("1", "fc")) for p in ("weight", "bias")
}


@dataclass(frozen=True)
class Role:
    """Checkpoint modules of one kind: where they sit, their GGUF prefix and their parameters' suffixes."""

    ident: str  # the prefix's TENSORS identifier; "" for tensors named without one
    module: str  # regex of the module path; groups `tower` and `bid` fill the prefix
    prefix: str  # GGUF name prefix, with {tower} / {bid}
    params: dict[str, tuple[str, ...]]  # parameter (relative to the module) -> GGUF suffix(es)
    component: str  # the component its tensors count under (bits per weight, quantizable set)
    generic: bool = True  # unknown parameters keep their relative name under the prefix


_TOWER = "(?P<tower>" + "|".join(TOWERS) + ")"
ROLES: tuple[Role, ...] = (
    Role(
        "V_BLK",
        rf"vision_backbone\.{_TOWER}\.blocks\.(?P<bid>\d+)",
        "{tower}.blk.{bid}.",
        _VIT_BLOCK,
        "vision",
    ),
    Role("V", rf"vision_backbone\.{_TOWER}", "{tower}.", _VIT_TOP, "vision", generic=False),
    Role("BLK", r"language_model\.model\.layers\.(?P<bid>\d+)", "blk.{bid}.", _LLM_LAYER, "llm"),
    Role("", r"language_model", "", _LLM_TOP, "llm", generic=False),
    Role("MM", r"projector", "mm.", _PROJECTOR, "projector"),
    Role("PROPRIO", r"proprio_projector", "proprio.", _PROPRIO, "proprio_projector"),
    Role(
        "ACT_BLK",
        r"action_head\.model\.mlp_resnet_blocks\.(?P<bid>\d+)",
        "act.blk.{bid}.",
        _ACT_BLOCK,
        "action_head",
        generic=False,
    ),
    Role("ACT", r"action_head", "act.", _ACT_HEAD, "action_head"),
)

# Checkpoint keys that are in the released weights but never run: no GGUF tensor.
UNUSED_KEYS = re.compile(r"vision_backbone\.fused_featurizer\.attn_pool\..+")


def _ident(suffix: str) -> str:
    return re.sub(r"[^A-Z0-9]", "_", suffix.upper())


def _tensors() -> dict[str, str]:
    out: dict[str, str] = {}
    for role in ROLES:
        if role.ident:
            out[role.ident] = role.prefix
        for suffixes in role.params.values():
            for s in suffixes:
                out["_".join(x for x in (role.ident, _ident(s)) if x)] = role.prefix + s
    return out


TENSORS: dict[str, str] = _tensors()


def _fill(prefix: str, m: re.Match) -> str:
    groups = m.groupdict()
    values = {"bid": groups.get("bid")}
    if groups.get("tower"):
        values["tower"] = TOWERS[groups["tower"]]
    return prefix.format(**{k: v for k, v in values.items() if v is not None})


def module_prefix(module: str) -> str | None:
    """The GGUF prefix of the role a checkpoint module sits in (`language_model.model.layers.3` -> `blk.3.`), or None.

    A skill's tensor_map.yaml names each parameter by its suffix under this prefix.
    """
    if module == "":
        return ""  # the whole model: its parameters' names are full checkpoint keys
    for role in ROLES:
        m = re.match(role.module + r"(?:\.|$)", module)
        if m:
            return _fill(role.prefix, m)
    return None


def gguf_names(key: str) -> list[str]:
    """GGUF tensor name(s) of a checkpoint key: one, three for a fused qkv, none for an unused key.

    Unknown parameters of a known role keep their relative name under the role's prefix (a new
    module class in a known role, written by the agent, needs no naming change); other unknown
    keys raise KeyError.
    """
    if UNUSED_KEYS.fullmatch(key):
        return []
    for role in ROLES:
        m = re.fullmatch(role.module + r"\.(?P<param>.+)", key)
        if m and m.group("param") in role.params:
            prefix = _fill(role.prefix, m)
            return [prefix + s for s in role.params[m.group("param")]]
    for role in ROLES:
        m = re.fullmatch(role.module + r"\.(?P<param>.+)", key)
        if m and role.generic:
            name = _fill(role.prefix, m) + m.group("param")
            if len(name) <= GGUF_NAME_MAX:
                return [name]
    raise KeyError(f"no GGUF name for checkpoint key {key!r}")


_COMPONENT_BY_HEAD = {
    r.prefix.split(".", 1)[0]: r.component for r in ROLES if r.prefix and "{" not in r.prefix[:2]
}
_COMPONENT_BY_HEAD.update({t: "vision" for t in TOWERS.values()})


def component_of(gguf_name: str) -> str:
    """The component a GGUF tensor counts under: vision, projector, llm, action_head, proprio_projector."""
    return _COMPONENT_BY_HEAD.get(gguf_name.split(".", 1)[0], "llm")


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


def key(ident: str, **fill: str) -> str:
    """A metadata key of KEYS without the arch prefix, placeholders filled: key("V_HEAD_COUNT", tower="v")."""
    return KEYS[ident].format(**fill)


def tensor(ident: str, **fill) -> str:
    """A tensor name of TENSORS, placeholders filled: tensor("BLK_ATTN_Q_WEIGHT", bid=0) is blk.0.attn_q.weight."""
    return TENSORS[ident].format(**fill)


def _slot_prefix(ident: str, **fill: str) -> str:
    return TENSORS[ident].format(bid="{0}", **fill)  # Slot prefixes take the layer index as {0}


def _slots():
    from omnimodel.codegen.slots import Slot

    return (
        Slot("proprio_projector", r"proprio_projector", _slot_prefix("PROPRIO"), "proprio_weights"),
        Slot("fused_projector", r"projector", _slot_prefix("MM"), "projector_weights"),
        Slot("mlp_resnet_action_head", r"action_head", _slot_prefix("ACT"), "action_head_weights"),
        Slot(
            "llama_decoder_layer", r"language_model\.model\.layers\.(\d+)", _slot_prefix("BLK"), "llama_layer"
        ),
        Slot(
            "dinov2_block",
            r"vision_backbone\.featurizer\.blocks\.(\d+)",
            _slot_prefix("V_BLK", tower=TOWERS["featurizer"]),
            "vit_layer",
        ),
        Slot(
            "siglip_block",
            r"vision_backbone\.fused_featurizer\.blocks\.(\d+)",
            _slot_prefix("V_BLK", tower=TOWERS["fused_featurizer"]),
            "vit_layer",
        ),
    )


def __getattr__(name: str):
    if (
        name == "SLOTS"
    ):  # built on first use: codegen.slots imports nothing of the arch, but keep the order safe
        return _slots()
    raise AttributeError(name)
