"""OpenVLA-OFT: fused DINOv2+SigLIP towers, projector, bidirectional LLaMA-2 trunk, L1 action head.

Everything the pipeline needs of this architecture is answered by `OpenVLAOFTArch`, registered
under the `omnimodel.archs` entry point `openvla-oft`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omnimodel.archs.base import Arch
from omnimodel.archs.openvla_oft.names import ARCH as NAME

# The skills this arch's graph calls, in the order their functions are emitted.
GRAPH_SKILLS = (
    "patch_embedding",
    "dinov2_block",
    "siglip_block",
    "fused_projector",
    "proprio_projector",
    "llama_decoder_layer",
    "rms_norm_final",
    "oft_parallel_decoding",
    "mlp_resnet_action_head",
)


class OpenVLAOFTArch(Arch):
    """The OpenVLA-OFT architecture (released Hugging Face layout, LIBERO OFT heads)."""

    name = NAME
    description = (
        "OpenVLA-OFT: DINOv2+SigLIP, LLaMA-2 7B run bidirectionally, parallel decoding, L1 action head"
    )
    bundled_preset = "openvla-oft-tiny"
    glue_classes = frozenset(
        {
            "OpenVLAOFT",
            "FusedVisionBackbone",
            "VisionTransformer",
            "LlamaForCausalLM",
            "LlamaModel",
            "ModuleList",
            "ModuleDict",
        }
    )
    inert_classes = frozenset(
        {"LlamaRotaryEmbedding", "Identity", "Dropout", "GELU", "ReLU", "SiLU", "SiLUActivation"}
    )
    graph_leaves = frozenset({"Embedding"})  # the token table is read with ggml_get_rows
    unused_classes = frozenset({"AttentionPoolHead"})  # SigLIP's pooling head: in the checkpoint, never run

    def presets(self) -> tuple[str, ...]:
        from omnimodel.archs.openvla_oft.model import PRESETS

        return tuple(PRESETS)

    def claims(self, ckpt: Path, config_json: dict) -> bool:
        # Plain OpenVLA writes the same model_type; the OFT side files (action head next to the
        # shards, as the released OFT repos ship it) tell the two apart.
        if config_json.get("model_type") != "openvla":
            return False
        if config_json.get("omnimodel_preset") in self.presets():
            return True  # our own checkpoints say so; a missing side file is then reported by the loader
        return any("action_head" in p.name and "checkpoint" in p.name for p in Path(ckpt).iterdir())

    def read_config(self, ckpt: Path) -> Any:
        from omnimodel.archs.openvla_oft.checkpoint import read_config

        return read_config(Path(ckpt))

    def load_model(self, ckpt: Path, dtype: Any = None) -> Any:
        import torch

        from omnimodel.archs.openvla_oft.checkpoint import load_model

        return load_model(Path(ckpt), dtype or torch.float32)

    def load_policy(self, ckpt: Path, **kwargs) -> Any:
        from omnimodel.archs.openvla_oft.policy import load_policy

        return load_policy(ckpt, **kwargs)

    def make_checkpoint(self, preset: str, out_dir: Path, seed: int = 0) -> Path:
        from omnimodel.archs.openvla_oft import zoo

        return zoo.make_checkpoint(preset, out_dir, seed=seed)

    def model_info(self, target: str) -> Any:
        from omnimodel.archs.openvla_oft import zoo

        return zoo.info(target)

    def gguf_names(self, key: str) -> list[str]:
        from omnimodel.archs.openvla_oft import names

        return names.gguf_names(key)

    def name_table(self) -> tuple[dict[str, str], dict[str, str]]:
        from omnimodel.archs.openvla_oft import names

        return dict(names.KEYS), dict(names.TENSORS)

    def module_prefix(self, module: str) -> str | None:
        from omnimodel.archs.openvla_oft import names

        return names.module_prefix(module)

    def component_of(self, gguf_name: str) -> str:
        from omnimodel.archs.openvla_oft import names

        return names.component_of(gguf_name)

    def is_quantizable(self, gguf_name: str, shape: tuple[int, ...]) -> bool:
        from omnimodel.archs.openvla_oft import names

        return names.is_quantizable(gguf_name, shape)

    def runtime_metadata(self, cfg: Any, stats: dict | None) -> dict[str, Any]:
        from omnimodel.archs.openvla_oft.metadata import runtime_metadata

        return runtime_metadata(cfg, stats)

    def owns_config(self, cfg: Any) -> bool:
        from omnimodel.archs.openvla_oft.model import OpenVLAOFTConfig

        return type(cfg) is OpenVLAOFTConfig

    def config_json(self, cfg: Any) -> dict:
        from omnimodel.archs.openvla_oft.checkpoint import config_to_json

        return config_to_json(cfg)

    def default_transforms(self, cfg: Any) -> dict[str, list[str]]:
        # LLaMA q/k rows get permute_rope, as llama.cpp's converter does; nothing else is transformed.
        from omnimodel.archs.openvla_oft.names import tensor

        out: dict[str, list[str]] = {}
        for i in range(int(cfg.layers)):
            out[tensor("BLK_ATTN_Q_WEIGHT", bid=i)] = ["permute_rope"]
            out[tensor("BLK_ATTN_K_WEIGHT", bid=i)] = ["permute_rope"]
        return out

    def rope_heads(self, gguf_name: str, cfg: Any) -> int:
        return int(cfg.kv_heads) if ".attn_k." in gguf_name else int(cfg.heads)

    def build_model(self, cfg: Any) -> Any:
        from omnimodel.archs.openvla_oft.model import OpenVLAOFT

        return OpenVLAOFT(cfg)

    def read_state_dict(self, ckpt: Path) -> Any:
        from omnimodel.archs.openvla_oft.checkpoint import read_state_dict

        return read_state_dict(Path(ckpt))

    def read_stats(self, ckpt: Path) -> dict:
        import json

        from omnimodel.archs.openvla_oft.checkpoint import STATS_FILE

        path = Path(ckpt) / STATS_FILE
        return json.loads(path.read_text()) if path.is_file() else {}

    def random_model(self, preset: str, seed: int = 0) -> tuple[Any, dict]:
        from omnimodel.archs.openvla_oft import zoo
        from omnimodel.models.zoo import random_stats

        model = zoo.build_random_model(preset, seed)
        return model, random_stats(seed, model.cfg.action_dim, model.cfg.proprio_dim)

    def shipped_checkpoints(self) -> dict[str, Path]:
        from omnimodel.archs.openvla_oft import zoo

        return {name: zoo.SHIPPED_DIR / name for name in zoo.SHIPPED}

    def slots(self) -> tuple[Any, ...]:
        from omnimodel.archs.openvla_oft.names import SLOTS

        return SLOTS

    def tower_inputs(self) -> dict[str, str]:
        # the labels are the towers' GGUF prefixes (v, v2) and llm, as the quantizer's targets name them
        from omnimodel.archs.openvla_oft.names import TOWERS

        out = {tag: f"vision_backbone.{tower}.blocks.0" for tower, tag in TOWERS.items()}
        out["llm"] = "language_model.model.layers.0"
        return out

    def trainer(self) -> Any:
        from omnimodel.archs.openvla_oft import train

        return train

    def write_test_vectors(self, root: Path | None = None, seed: int = 0) -> list[Path]:
        from omnimodel.archs.openvla_oft.testvectors import write_all

        return write_all(root, seed)

    def graph_skills(self) -> tuple[str, ...]:
        return GRAPH_SKILLS
