"""GGUF constants every architecture shares: the generic metadata keys and the name-length limit.

gguf-py style: keys are grouped in classes, spelled once here and imported everywhere else. An
architecture's own keys and tensor names live in its name table (`omnimodel/archs/<arch>/names.py`,
`KEYS` and `TENSORS`); its metadata keys are written under its name (`<arch>.<key>`, `arch_key`).
"""

from __future__ import annotations

GGUF_NAME_MAX = 63  # GGML_MAX_NAME (64) with its terminating NUL


class Keys:
    """Metadata keys not specific to an architecture."""

    class General:
        ARCHITECTURE = "general.architecture"
        NAME = "general.name"
        FILE_TYPE = "general.file_type"

    class Omnimodel:
        QUANT_METHOD = "omnimodel.quant.method"
        CONFIG_JSON = "omnimodel.config_json"  # the arch's whole config, as its config.json spells it
        DATASET_STATISTICS_JSON = "omnimodel.dataset_statistics_json"
        # The policy prompt the native omni_predict_text builds (the arch's metadata module writes them).
        PROMPT_TEMPLATE = "omnimodel.prompt.template"  # "{instruction}" marks where the instruction goes
        PROMPT_LOWERCASE = "omnimodel.prompt.lowercase_instruction"
        PROMPT_END_TOKEN = "omnimodel.prompt.end_token"  # appended unless the tokens already end with it
        # openpi's task cleaning before the template: strip, '_' and newlines to spaces
        PROMPT_CLEAN = "omnimodel.prompt.clean_instruction"
        # the template's "{state}" takes the robot state (the arch's library writes it, e.g. as 256 bins),
        # so the prompt needs the state: omni_predict_text / omni_prompt_tokens_state
        PROMPT_STATE = "omnimodel.prompt.state"

    class Module:
        """Keys of a skill's test_vector.gguf and a run's reference/<module>.gguf."""

        NAME = "omnimodel.module.name"
        CLASS = "omnimodel.module.class"
        INSTRUCTION = "omnimodel.instruction"
        OUT_SHAPE = "omnimodel.out.shape"


def arch_key(arch_name: str, key: str) -> str:
    """An architecture's metadata key under its name: `arch_key("x", "llm.block_count")` is `x.llm.block_count`."""
    return f"{arch_name}.{key}"


# A Hugging Face LLaMA/Gemma decoder layer's parameters (relative to the layer) -> llama.cpp's block
# tensor suffixes (gguf-py's TensorNameMap for these two families); a name table puts them after its
# block prefix (`blk.N.`, or a second stack's own prefix).
HF_DECODER_LAYER: dict[str, tuple[str, ...]] = {
    "self_attn.q_proj.weight": ("attn_q.weight",),
    "self_attn.k_proj.weight": ("attn_k.weight",),
    "self_attn.v_proj.weight": ("attn_v.weight",),
    "self_attn.o_proj.weight": ("attn_output.weight",),
    "mlp.gate_proj.weight": ("ffn_gate.weight",),
    "mlp.up_proj.weight": ("ffn_up.weight",),
    "mlp.down_proj.weight": ("ffn_down.weight",),
    "input_layernorm.weight": ("attn_norm.weight",),
    "post_attention_layernorm.weight": ("ffn_norm.weight",),
}
