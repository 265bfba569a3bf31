"""The original OpenVLA in plain PyTorch (shared/specs/vla-architectures.md, section OpenVLA).

One image through the OFT file's fused DINOv2+SigLIP towers and projector (imported, not copied),
a CAUSAL LLaMA-2 trunk (stock transformers LlamaForCausalLM), and 7 action tokens decoded greedily
with the KV cache, then the 256-bin de-tokenizer and BOUNDS_Q99 un-normalisation
(upstream: openvla/openvla prismatic/extern/hf/modeling_prismatic.py, prismatic/vla/action_tokenizer.py).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from transformers import DynamicCache, LlamaConfig, LlamaForCausalLM

from omnimodel.archs.openvla_oft.model import (
    DINOV2_L_REG4,
    SIGLIP_SO400M,
    FusedVisionBackbone,
    PrismaticProjector,
    TowerConfig,
    init_weights,
    trunk_llama_config,
)

__all__ = [
    "OpenVLA",
    "OpenVLAConfig",
    "PRESETS",
    "init_weights",
    "preset",
    "prompt",
    "tokens_to_actions",
    "unnormalize",
]

STOP_INDEX = 2  # </s>
SPACE_TOKEN = 29871  # LLaMA-2 '▁', appended by predict_action when the prompt lacks it


@dataclass
class OpenVLAConfig:
    """Every size of an OpenVLA model; the checkpoint's config.json maps onto it."""

    dino: TowerConfig
    siglip: TowerConfig
    hidden: int = 4096
    layers: int = 32
    heads: int = 32
    kv_heads: int = 32
    mlp: int = 11008
    vocab: int = 32064  # text_config.vocab_size, padded to a multiple of pad_to_multiple_of
    pad_to_multiple_of: int = 64
    rms_eps: float = 1e-6  # transformers' LlamaConfig default (text_config carries none)
    rope_theta: float = 10000.0
    max_positions: int = 2048
    pad_token_id: int = 32000
    bos_token_id: int = 1
    space_token_id: int = SPACE_TOKEN
    n_action_bins: int = 256
    action_dim: int = 7
    num_images: int = 1
    name: str = "openvla"
    extra: dict = field(default_factory=dict)

    @property
    def vision_width(self) -> int:
        return self.dino.width + self.siglip.width

    @property
    def text_vocab(self) -> int:
        """Upstream's `vocab_size = text_config.vocab_size - pad_to_multiple_of` (32000 for 7B)."""
        return self.vocab - self.pad_to_multiple_of

    @property
    def n_patch_tokens(self) -> int:
        return self.num_images * self.dino.n_patches

    def llama_config(self) -> LlamaConfig:
        """The transformers LlamaConfig of the (causal) trunk."""
        return trunk_llama_config(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> OpenVLAConfig:
        d = dict(d)
        d["dino"] = TowerConfig(**d["dino"])
        d["siglip"] = TowerConfig(**d["siglip"])
        return OpenVLAConfig(**d)


def prompt(instruction: str) -> str:
    """The released prompt; the tokenizer prepends BOS, then `with_space_token` appends 29871."""
    return f"In: What action should the robot take to {instruction.lower()}?\nOut:"


class OpenVLA(nn.Module):
    """The policy with the released module names (vision_backbone, projector, language_model)."""

    def __init__(self, cfg: OpenVLAConfig):
        super().__init__()
        self.cfg = cfg
        self.vision_backbone = FusedVisionBackbone(cfg)
        self.projector = PrismaticProjector(cfg.vision_width, cfg.hidden)
        self.language_model = LlamaForCausalLM(cfg.llama_config())  # causal, as released

    def with_space_token(self, input_ids: torch.Tensor) -> torch.Tensor:
        """Append the space token unless every row already ends with it (upstream predict_action)."""
        if torch.all(input_ids[:, -1] == self.cfg.space_token_id):
            return input_ids
        space = torch.full_like(input_ids[:, :1], self.cfg.space_token_id)
        return torch.cat([input_ids, space], dim=1)

    def multimodal_embeddings(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """[BOS] + projected patches of the one image + the rest of the prompt."""
        emb = self.language_model.get_input_embeddings()(input_ids)
        patches = self.projector(self.vision_backbone(pixel_values.to(emb.dtype)))
        return torch.cat([emb[:, :1], patches, emb[:, 1:]], dim=1)

    def forward(self, pixel_values: torch.Tensor, input_ids: torch.Tensor, past_key_values=None):
        """Logits (B, L, vocab) and hidden states of the prompt pass (transformers' CausalLM output)."""
        x = self.multimodal_embeddings(pixel_values, input_ids)
        return self.language_model(
            inputs_embeds=x, past_key_values=past_key_values, use_cache=past_key_values is not None
        )

    @torch.no_grad()
    def predict_tokens(self, pixel_values: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """Greedy decoding of action_dim tokens: one prompt pass, then one cached step per token."""
        cache = DynamicCache()
        logits = self.forward(pixel_values, input_ids, past_key_values=cache).logits
        tokens = []
        for i in range(self.cfg.action_dim):
            tok = logits[:, -1].argmax(-1, keepdim=True)  # unconstrained argmax over the padded vocab
            tokens.append(tok)
            if i + 1 < self.cfg.action_dim:
                logits = self.language_model(input_ids=tok, past_key_values=cache, use_cache=True).logits
        return torch.cat(tokens, dim=1)


def tokens_to_actions(token_ids, cfg: OpenVLAConfig) -> np.ndarray:
    """Upstream's de-tokenizer: bin_centers[clip(vocab_size - id - 1, 0, 254)], vocab_size = 32000.

    The brief wrote clip(vocab_size - id); upstream and the spec subtract 1 more (np.digitize is
    1-based), so id 31999 is bin 0 (-0.996) and id 31745 bin 254 (+0.996). We follow upstream.
    """
    bins = np.linspace(-1, 1, cfg.n_action_bins)
    bin_centers = (bins[:-1] + bins[1:]) / 2.0
    discretized = cfg.text_vocab - np.asarray(token_ids)
    discretized = np.clip(discretized - 1, a_min=0, a_max=bin_centers.shape[0] - 1)
    return bin_centers[discretized]


def unnormalize(actions: np.ndarray, norm_stats: dict, unnorm_key: str | None = None) -> np.ndarray:
    """BOUNDS_Q99: 0.5 (a + 1)(q99 - q01) + q01 where mask, else a (no +1e-8, unlike OFT)."""
    if unnorm_key is None:
        if len(norm_stats) != 1:
            raise ValueError(
                f"norm_stats holds several datasets; pass unnorm_key, one of {', '.join(norm_stats)}"
            )
        unnorm_key = next(iter(norm_stats))
    if unnorm_key not in norm_stats:
        raise ValueError(
            f"unnorm_key {unnorm_key!r} not in norm_stats: choose one of {', '.join(norm_stats)}"
        )
    stats = norm_stats[unnorm_key]["action"]
    q01, q99 = np.asarray(stats["q01"]), np.asarray(stats["q99"])
    mask = np.asarray(stats.get("mask", np.ones_like(q01, dtype=bool)), dtype=bool)
    return np.where(mask, 0.5 * (actions + 1) * (q99 - q01) + q01, actions)


# ----------------------------------------------------------------------------- presets

PRESETS: dict[str, OpenVLAConfig] = {
    "openvla": OpenVLAConfig(DINOV2_L_REG4, SIGLIP_SO400M, name="openvla"),
    "openvla-tiny": OpenVLAConfig(
        TowerConfig(
            "omnimodel/vit_tiny_patch14_reg4_dinov2",
            256,
            3,
            4,
            512,
            n_registers=4,
            class_token=True,
            layer_scale=True,
        ),
        TowerConfig("omnimodel/vit_tiny_patch14_siglip_224", 256, 3, 4, 768, attn_pool=True),
        hidden=256,
        layers=2,
        heads=4,
        kv_heads=4,
        mlp=768,
        vocab=576,  # 512 + 64: the char tokenizer's 512 ids, the top 256 of them action tokens
        pad_token_id=512,
        space_token_id=3,  # '▁' in omnimodel.models.tokenizer.build_char_tokenizer
        name="openvla-tiny",
    ),
}


def preset(name: str) -> OpenVLAConfig:
    """A copy of a named preset's config."""
    from omnimodel.errors import ConfigError

    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return OpenVLAConfig.from_dict(PRESETS[name].to_dict())
