"""OpenVLA-OFT: fused DINOv2+SigLIP towers, projector, bidirectional LLaMA-2 trunk, L1 action head.

Everything the pipeline needs of this architecture is answered by `OpenVLAOFTArch`, registered
under the `omnimodel.archs` entry point `openvla-oft`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omnimodel.archs.openvla_oft.names import ARCH as NAME
from omnimodel.archs.openvla_oft.prismatic import PrismaticArch

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


class OpenVLAOFTArch(PrismaticArch):
    """The OpenVLA-OFT architecture (released Hugging Face layout, LIBERO OFT heads)."""

    name = NAME
    description = (
        "OpenVLA-OFT: DINOv2+SigLIP, LLaMA-2 7B run bidirectionally, parallel decoding, L1 action head"
    )
    bundled_preset = "openvla-oft-tiny"
    root_class = "OpenVLAOFT"

    def claims(self, ckpt: Path, config_json: dict) -> bool:
        # Plain OpenVLA writes the same model_type; the OFT side files (action head next to the
        # shards, as the released OFT repos ship it) tell the two apart.
        if config_json.get("model_type") != "openvla":
            return False
        if config_json.get("omnimodel_preset") in self.presets():
            return True  # our own checkpoints say so; a missing side file is then reported by the loader
        return any("action_head" in p.name and "checkpoint" in p.name for p in Path(ckpt).iterdir())

    def owns_config(self, cfg: Any) -> bool:
        from omnimodel.archs.openvla_oft.model import OpenVLAOFTConfig

        return type(cfg) is OpenVLAOFTConfig

    def build_model(self, cfg: Any) -> Any:
        from omnimodel.archs.openvla_oft.model import OpenVLAOFT

        return OpenVLAOFT(cfg)

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

    def trainer(self) -> Any:
        from omnimodel.archs.openvla_oft import train

        return train

    def observation_keys(self) -> dict[str, Any]:
        return {"images": ("observation/image", "observation/wrist_image"), "state": "observation/state"}

    def graph_skills(self) -> tuple[str, ...]:
        return GRAPH_SKILLS
