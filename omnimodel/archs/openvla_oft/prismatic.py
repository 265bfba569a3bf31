"""What the Prismatic-family archs share (OpenVLA-OFT here, OpenVLA beside it).

Fused DINOv2+SigLIP towers, the GELU projector and a LLaMA-2 trunk, under the same checkpoint
keys and GGUF names: the plan rules, the converter's RoPE row permutation and the calibration
hooks are the family's, so each arch class states only what is its own.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omnimodel.archs.base import PackageArch

_GLUE = frozenset(
    {"FusedVisionBackbone", "VisionTransformer", "LlamaForCausalLM", "LlamaModel", "ModuleList", "ModuleDict"}
)


class PrismaticArch(PackageArch):
    """Plan rules and LLaMA-trunk conversion of the Prismatic family; `root_class` is the arch's model class."""

    root_class = ""
    inert_classes = frozenset(
        {"LlamaRotaryEmbedding", "Identity", "Dropout", "GELU", "ReLU", "SiLU", "SiLUActivation"}
    )
    graph_leaves = frozenset({"Embedding"})  # the token table is read with ggml_get_rows
    unused_classes = frozenset({"AttentionPoolHead"})  # SigLIP's pooling head: in the checkpoint, never run

    def __init_subclass__(cls, **kwargs):
        super().__init_subclass__(**kwargs)
        cls.glue_classes = _GLUE | {cls.root_class}

    def check_checkpoint(self, ckpt: Path) -> None:
        """config.json, its layer counts against the tensor names, every shard header, the index and the side
        files, then every tensor's name and shape against the model config.json describes (memory-mapped and
        on the meta device: no weight is read)."""
        import json

        import torch

        from omnimodel.archs.openvla_oft.checkpoint import check_layer_counts, tensor_names
        from omnimodel.archs.validate import check_tensors

        cfg = self.read_config(ckpt)
        check_layer_counts(cfg, tensor_names(ckpt), str(Path(ckpt) / "config.json"))
        state = self.read_state_dict(ckpt)
        if json.loads((Path(ckpt) / "config.json").read_text()).get("omnimodel_custom_modules"):
            return  # a user's module classes run only once the port installs them (--trust-remote-code)
        with torch.device("meta"):  # shapes only: no weight is allocated or read
            model = self.build_model(cfg)
        check_tensors(Path(ckpt), dict(model.state_dict()), state)

    def default_transforms(self, cfg: Any) -> dict[str, list[str]]:
        # LLaMA q/k rows get permute_rope, as llama.cpp's converter does; nothing else is transformed.
        from omnimodel.archs.openvla_oft.names import tensor

        out: dict[str, list[str]] = {}
        for i in range(int(cfg.layers)):
            out[tensor("BLK_ATTN_Q_WEIGHT", bid=i)] = ["permute_rope"]
            out[tensor("BLK_ATTN_K_WEIGHT", bid=i)] = ["permute_rope"]
        return out

    def query_groups(self, cfg: Any) -> int:
        return int(cfg.heads) // int(cfg.kv_heads)

    def rope_heads(self, gguf_name: str, cfg: Any) -> int:
        return int(cfg.kv_heads) if ".attn_k." in gguf_name else int(cfg.heads)

    def tower_inputs(self) -> dict[str, str]:
        # the labels are the towers' GGUF prefixes (v, v2) and llm, as the quantizer's targets name them
        from omnimodel.archs.openvla_oft.names import TOWERS

        out = {tag: f"vision_backbone.{tower}.blocks.0" for tower, tag in TOWERS.items()}
        out["llm"] = "language_model.model.layers.0"
        return out
