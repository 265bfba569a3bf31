"""OpenVLA (openvla/openvla-7b): fused DINOv2+SigLIP, causal LLaMA-2 7B, 7 action tokens decoded greedily.

Everything the pipeline needs of this architecture is answered by `OpenVLAArch`, registered under
the `omnimodel.archs` entry point `openvla`. The towers, projector and trunk are OpenVLA-OFT's
(same checkpoint keys, GGUF names and skills); OpenVLA adds the LM head and cached greedy decoding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omnimodel.archs.base import Arch
from omnimodel.archs.openvla.names import ARCH as NAME

# The skills this arch's graph calls, in the order their functions are emitted.
GRAPH_SKILLS = (
    "patch_embedding",
    "dinov2_block",
    "siglip_block",
    "fused_projector",
    "llama_decoder_layer",
    "rms_norm_final",
    "lm_head_greedy",
)
_OFT_SIDE_FILES = ("action_head", "proprio_projector")


class OpenVLAArch(Arch):
    """The original OpenVLA (released Hugging Face layout, norm_stats in config.json, no side files)."""

    name = NAME
    description = "OpenVLA: DINOv2+SigLIP, causal LLaMA-2 7B, 7 action tokens decoded greedily with a KV cache"
    bundled_preset = "openvla-tiny"
    glue_classes = frozenset(
        {"OpenVLA", "FusedVisionBackbone", "VisionTransformer", "LlamaForCausalLM", "LlamaModel", "ModuleList", "ModuleDict"}
    )
    inert_classes = frozenset({"LlamaRotaryEmbedding", "Identity", "Dropout", "GELU", "ReLU", "SiLU", "SiLUActivation"})
    graph_leaves = frozenset({"Embedding"})  # the token table is read with ggml_get_rows
    unused_classes = frozenset({"AttentionPoolHead"})  # SigLIP's pooling head: in the checkpoint, never run

    def presets(self) -> tuple[str, ...]:
        from omnimodel.archs.openvla.model import PRESETS

        return tuple(PRESETS)

    def claims(self, ckpt: Path, config_json: dict) -> bool:
        # OpenVLA-OFT writes the same model_type; its side files (or its own preset name) tell it apart.
        if config_json.get("model_type") != "openvla":
            return False
        own = config_json.get("omnimodel_preset")
        if own is not None:
            return own in self.presets()
        return not any(
            "checkpoint" in p.name and any(s in p.name for s in _OFT_SIDE_FILES) for p in Path(ckpt).iterdir()
        )

    def read_config(self, ckpt: Path) -> Any:
        from omnimodel.archs.openvla.checkpoint import read_config

        return read_config(Path(ckpt))

    def load_model(self, ckpt: Path, dtype: Any = None) -> Any:
        import torch

        from omnimodel.archs.openvla.checkpoint import load_model

        return load_model(Path(ckpt), dtype or torch.float32)

    def load_policy(self, ckpt: Path, **kwargs) -> Any:
        from omnimodel.archs.openvla.policy import load_policy

        return load_policy(ckpt, **kwargs)

    def make_checkpoint(self, preset: str, out_dir: Path, seed: int = 0) -> Path:
        from omnimodel.archs.openvla import zoo

        return zoo.make_checkpoint(preset, out_dir, seed=seed)

    def model_info(self, target: str) -> Any:
        from omnimodel.archs.openvla import zoo

        return zoo.info(target)

    def gguf_names(self, key: str) -> list[str]:
        from omnimodel.archs.openvla import names

        return names.gguf_names(key)

    def name_table(self) -> tuple[dict[str, str], dict[str, str]]:
        from omnimodel.archs.openvla import names

        return dict(names.KEYS), dict(names.TENSORS)

    def module_prefix(self, module: str) -> str | None:
        from omnimodel.archs.openvla import names

        return names.module_prefix(module)

    def component_of(self, gguf_name: str) -> str:
        from omnimodel.archs.openvla import names

        return names.component_of(gguf_name)

    def is_quantizable(self, gguf_name: str, shape: tuple[int, ...]) -> bool:
        from omnimodel.archs.openvla import names

        return names.is_quantizable(gguf_name, shape)

    def runtime_metadata(self, cfg: Any, stats: dict | None) -> dict[str, Any]:
        from omnimodel.archs.openvla.metadata import runtime_metadata

        return runtime_metadata(cfg, stats)

    def owns_config(self, cfg: Any) -> bool:
        from omnimodel.archs.openvla.model import OpenVLAConfig

        return type(cfg) is OpenVLAConfig

    def config_json(self, cfg: Any) -> dict:
        from omnimodel.archs.openvla.checkpoint import config_to_json

        return config_to_json(cfg)

    def default_transforms(self, cfg: Any) -> dict[str, list[str]]:
        # LLaMA q/k rows get permute_rope, as llama.cpp's converter does; nothing else is transformed.
        from omnimodel.archs.openvla.names import tensor

        out: dict[str, list[str]] = {}
        for i in range(int(cfg.layers)):
            out[tensor("BLK_ATTN_Q_WEIGHT", bid=i)] = ["permute_rope"]
            out[tensor("BLK_ATTN_K_WEIGHT", bid=i)] = ["permute_rope"]
        return out

    def rope_heads(self, gguf_name: str, cfg: Any) -> int:
        return int(cfg.kv_heads) if ".attn_k." in gguf_name else int(cfg.heads)

    def build_model(self, cfg: Any) -> Any:
        from omnimodel.archs.openvla.model import OpenVLA

        return OpenVLA(cfg)

    def read_state_dict(self, ckpt: Path) -> Any:
        from omnimodel.archs.openvla.checkpoint import read_state_dict

        return read_state_dict(Path(ckpt))

    def read_stats(self, ckpt: Path) -> dict:
        from omnimodel.archs.openvla.checkpoint import read_norm_stats

        return read_norm_stats(Path(ckpt))

    def random_model(self, preset: str, seed: int = 0) -> tuple[Any, dict]:
        from omnimodel.archs.openvla import zoo

        model = zoo.build_random_model(preset, seed)
        return model, zoo.random_norm_stats(seed, model.cfg.action_dim)

    def slots(self) -> tuple[Any, ...]:
        from omnimodel.archs.openvla.names import slots

        return slots()

    def tower_inputs(self) -> dict[str, str]:
        from omnimodel.archs.openvla.names import TOWERS

        out = {tag: f"vision_backbone.{tower}.blocks.0" for tower, tag in TOWERS.items()}
        out["llm"] = "language_model.model.layers.0"
        return out

    def write_test_vectors(self, root: Path | None = None, seed: int = 0) -> list[Path]:
        from omnimodel.archs.openvla.testvectors import write_all

        return write_all(root, seed)

    def graph_skills(self) -> tuple[str, ...]:
        return GRAPH_SKILLS
