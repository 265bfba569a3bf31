"""OpenVLA (openvla/openvla-7b): fused DINOv2+SigLIP, causal LLaMA-2 7B, 7 action tokens decoded greedily.

Everything the pipeline needs of this architecture is answered by `OpenVLAArch`, registered under
the `omnimodel.archs` entry point `openvla`. The towers, projector and trunk are OpenVLA-OFT's
(same checkpoint keys, GGUF names and skills); OpenVLA adds the LM head and cached greedy decoding.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from omnimodel.archs.openvla.names import ARCH as NAME
from omnimodel.archs.openvla_oft.prismatic import PrismaticArch

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


class OpenVLAArch(PrismaticArch):
    """The original OpenVLA (released Hugging Face layout, norm_stats in config.json, no side files)."""

    name = NAME
    description = (
        "OpenVLA: DINOv2+SigLIP, causal LLaMA-2 7B, 7 action tokens decoded greedily with a KV cache"
    )
    bundled_preset = "openvla-tiny"
    root_class = "OpenVLA"

    def claims(self, ckpt: Path, config_json: dict) -> bool:
        # OpenVLA-OFT writes the same model_type; its side files (or its own preset name) tell it apart.
        if config_json.get("model_type") != "openvla":
            return False
        from omnimodel import archs

        own = config_json.get("omnimodel_preset")
        if any(own in a.presets() for a in archs.registry().values()):
            return (
                own in self.presets()
            )  # a custom name (`zoo make --set omnimodel_preset=...`) falls through
        return not any(
            "checkpoint" in p.name and any(s in p.name for s in _OFT_SIDE_FILES) for p in Path(ckpt).iterdir()
        )

    def owns_config(self, cfg: Any) -> bool:
        from omnimodel.archs.openvla.model import OpenVLAConfig

        return type(cfg) is OpenVLAConfig

    def build_model(self, cfg: Any) -> Any:
        from omnimodel.archs.openvla.model import OpenVLA

        return OpenVLA(cfg)

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

    def observation_keys(self) -> dict[str, Any]:
        return {"images": ("observation/image",), "state": None}

    def graph_skills(self) -> tuple[str, ...]:
        return GRAPH_SKILLS
