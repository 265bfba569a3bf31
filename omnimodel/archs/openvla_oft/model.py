"""OpenVLA-OFT in plain PyTorch: fused DINOv2+SigLIP towers, projector, LLaMA-2 trunk, OFT heads.

Faithful to the released model (shared/specs/vla-architectures.md): the vision towers use timm's
parameter names (LayerScale as `scale_factor`, the HF export's rename), the trunk is transformers'
own LlamaForCausalLM run BIDIRECTIONALLY (OFT's transformers fork), the action head reads the
positions one before each action placeholder, and RMSNorm eps defaults to 1e-6.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn
from transformers import LlamaConfig, LlamaForCausalLM

# the towers' released processor normalisation, spelled with the preprocessing
from omnimodel.models.preprocess import DINO_MEAN, DINO_STD, SIGLIP_MEAN, SIGLIP_STD  # noqa: F401

# LIBERO constants (oft:prismatic/vla/constants.py)
NUM_ACTIONS_CHUNK = 8
ACTION_DIM = 7
PROPRIO_DIM = 8
STOP_INDEX = 2
IGNORE_INDEX = -100
N_ACTION_BINS = 256


@dataclass
class TowerConfig:
    """One ViT tower (timm VisionTransformer subset used by Prismatic)."""

    timm_id: str
    width: int
    depth: int
    heads: int
    mlp: int
    patch: int = 14
    image: int = 224
    n_registers: int = 0
    class_token: bool = False
    layer_scale: bool = False
    attn_pool: bool = False
    ln_eps: float = 1e-6

    @property
    def n_patches(self) -> int:
        return (self.image // self.patch) ** 2

    @property
    def n_prefix(self) -> int:
        return int(self.class_token) + self.n_registers


@dataclass
class OpenVLAOFTConfig:
    """Every size of an OpenVLA-OFT model; the checkpoint's config.json maps onto it."""

    dino: TowerConfig
    siglip: TowerConfig
    hidden: int = 4096
    layers: int = 32
    heads: int = 32
    kv_heads: int = 32
    mlp: int = 11008
    vocab: int = 32064  # padded
    text_vocab: int = 32000  # tokenizer.vocab_size (unpadded): action ids = text_vocab - bin
    rms_eps: float = 1e-6
    rope_theta: float = 10000.0
    max_positions: int = 2048
    pad_token_id: int = 32000
    bos_token_id: int = 1
    chunk: int = NUM_ACTIONS_CHUNK
    action_dim: int = ACTION_DIM
    proprio_dim: int = PROPRIO_DIM
    head_blocks: int = 2
    num_images: int = 2
    name: str = "openvla-oft"
    extra: dict = field(default_factory=dict)

    @property
    def vision_width(self) -> int:
        return self.dino.width + self.siglip.width

    @property
    def n_action_tokens(self) -> int:
        return self.chunk * self.action_dim

    @property
    def n_patch_tokens(self) -> int:
        """Patch tokens of all images plus the proprio token (NUM_PATCHES upstream)."""
        return self.num_images * self.dino.n_patches + 1

    def llama_config(self) -> LlamaConfig:
        """The transformers LlamaConfig of the trunk."""
        return trunk_llama_config(self)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d: dict) -> OpenVLAOFTConfig:
        d = dict(d)
        d["dino"] = TowerConfig(**d["dino"])
        d["siglip"] = TowerConfig(**d["siglip"])
        return OpenVLAOFTConfig(**d)


def trunk_llama_config(cfg) -> LlamaConfig:
    """The transformers LlamaConfig of a Prismatic LLaMA-2 trunk from a config with our size fields."""
    return LlamaConfig(
        hidden_size=cfg.hidden,
        intermediate_size=cfg.mlp,
        num_hidden_layers=cfg.layers,
        num_attention_heads=cfg.heads,
        num_key_value_heads=cfg.kv_heads,
        vocab_size=cfg.vocab,
        rms_norm_eps=cfg.rms_eps,
        rope_theta=cfg.rope_theta,
        max_position_embeddings=cfg.max_positions,
        pad_token_id=cfg.pad_token_id,
        bos_token_id=cfg.bos_token_id,
        eos_token_id=STOP_INDEX,
        tie_word_embeddings=False,
        attn_implementation="sdpa",
    )


# ----------------------------------------------------------------------------- vision towers


class PatchEmbed(nn.Module):
    """Conv patchifier: (B, 3, H, W) -> (B, N, D) (timm name `patch_embed.proj`)."""

    def __init__(self, patch: int, width: int):
        super().__init__()
        self.proj = nn.Conv2d(3, width, kernel_size=patch, stride=patch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.proj(x).flatten(2).transpose(1, 2)


class Attention(nn.Module):
    """Multi-head self-attention with a fused qkv projection (timm layout)."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, n, c = x.shape
        qkv = self.qkv(x).reshape(b, n, 3, self.heads, c // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(qkv[0], qkv[1], qkv[2])
        return self.proj(out.transpose(1, 2).reshape(b, n, c))


class Mlp(nn.Module):
    """fc1 -> exact GELU -> fc2."""

    def __init__(self, width: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(width, hidden)
        self.act = nn.GELU()
        self.fc2 = nn.Linear(hidden, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act(self.fc1(x)))


class LayerScale(nn.Module):
    """Per-channel residual scale; `scale_factor` is the HF export's name for timm's `gamma`."""

    def __init__(self, width: int, init: float = 1e-5):
        super().__init__()
        self.scale_factor = nn.Parameter(torch.full((width,), init))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale_factor


class Block(nn.Module):
    """Pre-norm ViT block; LayerScale on both branches for DINOv2, identity for SigLIP."""

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.attn = Attention(cfg.width, cfg.heads)
        self.ls1 = LayerScale(cfg.width) if cfg.layer_scale else nn.Identity()
        self.norm2 = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.mlp = Mlp(cfg.width, cfg.mlp)
        self.ls2 = LayerScale(cfg.width) if cfg.layer_scale else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.ls1(self.attn(self.norm1(x)))
        return x + self.ls2(self.mlp(self.norm2(x)))


class AttentionPoolHead(nn.Module):
    """SigLIP's MAP head: present in checkpoints, unused by Prismatic (kept so keys load)."""

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.latent = nn.Parameter(torch.zeros(1, 1, cfg.width))
        self.q = nn.Linear(cfg.width, cfg.width)
        self.kv = nn.Linear(cfg.width, 2 * cfg.width)
        self.proj = nn.Linear(cfg.width, cfg.width)
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.mlp = Mlp(cfg.width, cfg.mlp)


class VisionTransformer(nn.Module):
    """A timm-named ViT that returns the patch tokens of its second-to-last block."""

    def __init__(self, cfg: TowerConfig):
        super().__init__()
        self.cfg = cfg
        self.patch_embed = PatchEmbed(cfg.patch, cfg.width)
        if cfg.class_token:
            self.cls_token = nn.Parameter(torch.zeros(1, 1, cfg.width))
        if cfg.n_registers:
            self.reg_token = nn.Parameter(torch.zeros(1, cfg.n_registers, cfg.width))
        # no_embed_class: the position embedding covers the patches only.
        self.pos_embed = nn.Parameter(torch.zeros(1, cfg.n_patches, cfg.width))
        self.blocks = nn.ModuleList(Block(cfg) for _ in range(cfg.depth))
        self.norm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        if cfg.attn_pool:
            self.attn_pool = AttentionPoolHead(cfg)

    def embed(self, x: torch.Tensor) -> torch.Tensor:
        """Patchify, add positions, prepend CLS and registers (timm `_pos_embed`)."""
        x = self.patch_embed(x) + self.pos_embed
        prefix = []
        if self.cfg.class_token:
            prefix.append(self.cls_token.expand(x.shape[0], -1, -1))
        if self.cfg.n_registers:
            prefix.append(self.reg_token.expand(x.shape[0], -1, -1))
        return torch.cat([*prefix, x], dim=1) if prefix else x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Patch tokens after block depth-2 (timm get_intermediate_layers n={depth-2}, no norm)."""
        x = self.embed(x)
        for blk in self.blocks[: self.cfg.depth - 1]:  # the last block's output is unused
            x = blk(x)
        return x[:, self.cfg.n_prefix :]


class FusedVisionBackbone(nn.Module):
    """DINOv2 (`featurizer`, channels 0-2) and SigLIP (`fused_featurizer`, channels 3-5) per image."""

    def __init__(self, cfg: OpenVLAOFTConfig):
        super().__init__()
        self.num_images = cfg.num_images
        self.featurizer = VisionTransformer(cfg.dino)
        self.fused_featurizer = VisionTransformer(cfg.siglip)

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """(B, 6*num_images, H, W) -> (B, num_images * N, D_dino + D_siglip)."""
        feats = []
        for img in torch.split(pixel_values, 6, dim=1):
            feats.append(torch.cat([self.featurizer(img[:, :3]), self.fused_featurizer(img[:, 3:])], dim=2))
        return torch.cat(feats, dim=1)


# ----------------------------------------------------------------------------- projectors, heads


class PrismaticProjector(nn.Module):
    """Fused GELU MLP: fc1 (4x vision width) -> GELU -> fc2 -> GELU -> fc3."""

    def __init__(self, vision_width: int, llm_width: int):
        super().__init__()
        self.fc1 = nn.Linear(vision_width, 4 * vision_width)
        self.fc2 = nn.Linear(4 * vision_width, llm_width)
        self.fc3 = nn.Linear(llm_width, llm_width)
        self.act_fn1 = nn.GELU()
        self.act_fn2 = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc3(self.act_fn2(self.fc2(self.act_fn1(self.fc1(x)))))


class ProprioProjector(nn.Module):
    """Normalised proprio (B, P) -> one LLM token (B, D)."""

    def __init__(self, proprio_dim: int, llm_width: int):
        super().__init__()
        self.fc1 = nn.Linear(proprio_dim, llm_width)
        self.fc2 = nn.Linear(llm_width, llm_width)
        self.act_fn1 = nn.GELU()

    def forward(self, proprio: torch.Tensor) -> torch.Tensor:
        return self.fc2(self.act_fn1(self.fc1(proprio)))


class MLPResNetBlock(nn.Module):
    """x + ReLU(Linear(LayerNorm(x)))."""

    def __init__(self, dim: int):
        super().__init__()
        self.ffn = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.ffn(x)


class MLPResNet(nn.Module):
    """LayerNorm -> fc1 -> ReLU -> residual blocks -> LayerNorm -> fc2."""

    def __init__(self, num_blocks: int, input_dim: int, hidden_dim: int, output_dim: int):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(input_dim)
        self.fc1 = nn.Linear(input_dim, hidden_dim)
        self.relu = nn.ReLU()
        self.mlp_resnet_blocks = nn.ModuleList(MLPResNetBlock(hidden_dim) for _ in range(num_blocks))
        self.layer_norm2 = nn.LayerNorm(hidden_dim)
        self.fc2 = nn.Linear(hidden_dim, output_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.fc1(self.layer_norm1(x)))
        for block in self.mlp_resnet_blocks:
            x = block(x)
        return self.fc2(self.layer_norm2(x))


class L1RegressionActionHead(nn.Module):
    """OFT's continuous head: (B, chunk*dim, D) hidden states -> (B, chunk, dim) normalised actions."""

    def __init__(self, llm_width: int, action_dim: int, chunk: int, num_blocks: int = 2):
        super().__init__()
        self.chunk = chunk
        self.model = MLPResNet(num_blocks, llm_width * action_dim, llm_width, action_dim)

    def forward(self, actions_hidden_states: torch.Tensor) -> torch.Tensor:
        b = actions_hidden_states.shape[0]
        return self.model(actions_hidden_states.reshape(b, self.chunk, -1))


# ----------------------------------------------------------------------------- the policy


@dataclass
class ForwardOutput:
    """What one parallel-decoding pass produces."""

    actions: torch.Tensor  # (B, chunk, dim) normalised
    action_hidden: torch.Tensor  # (B, chunk*dim, D) the rows the head reads
    action_logits: torch.Tensor | None  # (B, chunk*dim, vocab) LM-head logits at the same rows


class OpenVLAOFT(nn.Module):
    """The whole policy with the released module names (vision_backbone, projector, language_model)."""

    def __init__(self, cfg: OpenVLAOFTConfig):
        super().__init__()
        self.cfg = cfg
        self.vision_backbone = FusedVisionBackbone(cfg)
        self.projector = PrismaticProjector(cfg.vision_width, cfg.hidden)
        self.language_model = LlamaForCausalLM(cfg.llama_config())
        for layer in self.language_model.model.layers:
            layer.self_attn.is_causal = False  # OFT's transformers fork: bidirectional attention
        self.action_head = L1RegressionActionHead(cfg.hidden, cfg.action_dim, cfg.chunk, cfg.head_blocks)
        self.proprio_projector = ProprioProjector(cfg.proprio_dim, cfg.hidden)

    def multimodal_embeddings(
        self, pixel_values: torch.Tensor, input_ids: torch.Tensor, proprio: torch.Tensor
    ) -> torch.Tensor:
        """[BOS] + patches (all images) + proprio token + prompt + zeroed placeholders + stop."""
        cfg = self.cfg
        b = input_ids.shape[0]
        placeholders = torch.ones(b, cfg.n_action_tokens, dtype=input_ids.dtype, device=input_ids.device)
        stop = torch.full((b, 1), STOP_INDEX, dtype=input_ids.dtype, device=input_ids.device)
        ids = torch.cat([input_ids, placeholders, stop], dim=1)
        keep = torch.ones(ids.shape[1], device=ids.device)
        keep[input_ids.shape[1] : input_ids.shape[1] + cfg.n_action_tokens] = 0
        return self.assemble_sequence(pixel_values, ids, keep[None, :], proprio)

    def assemble_sequence(
        self, pixel_values: torch.Tensor, ids: torch.Tensor, keep: torch.Tensor, proprio: torch.Tensor
    ) -> torch.Tensor:
        """Token embeddings (times `keep`, 0 for the placeholders) with the patches and the proprio token after BOS."""
        emb = self.language_model.get_input_embeddings()(ids)
        emb = emb * keep.to(emb.dtype)[:, :, None]
        patches = self.projector(self.vision_backbone(pixel_values.to(emb.dtype)))
        proprio_tok = self.proprio_projector(proprio.to(emb.dtype)).unsqueeze(1)
        return torch.cat([emb[:, :1], patches, proprio_tok, emb[:, 1:]], dim=1)

    def forward(
        self,
        pixel_values: torch.Tensor,
        input_ids: torch.Tensor,
        proprio: torch.Tensor,
        with_logits: bool = False,
    ) -> ForwardOutput:
        """One parallel-decoding pass; input_ids is BOS + prompt ending with the space token."""
        cfg = self.cfg
        x = self.multimodal_embeddings(pixel_values, input_ids, proprio)
        b, length, _ = x.shape
        mask = torch.zeros(b, 1, length, length, dtype=x.dtype, device=x.device)  # bidirectional
        hidden = self.language_model.model(
            inputs_embeds=x, attention_mask=mask, use_cache=False
        ).last_hidden_state
        n_prompt = input_ids.shape[1] - 1  # prompt ids after BOS
        start = cfg.n_patch_tokens + n_prompt  # one before the first placeholder
        rows = hidden[:, start : start + cfg.n_action_tokens]
        logits = self.language_model.lm_head(rows) if with_logits else None
        return ForwardOutput(self.action_head(rows), rows, logits)


# ----------------------------------------------------------------------------- presets

DINOV2_L_REG4 = TowerConfig(
    "vit_large_patch14_reg4_dinov2.lvd142m",
    1024,
    24,
    16,
    4096,
    n_registers=4,
    class_token=True,
    layer_scale=True,
)
SIGLIP_SO400M = TowerConfig("vit_so400m_patch14_siglip_224", 1152, 27, 16, 4304, attn_pool=True)
KNOWN_TOWERS = {t.timm_id: t for t in (DINOV2_L_REG4, SIGLIP_SO400M)}

PRESETS: dict[str, OpenVLAOFTConfig] = {
    "openvla-oft": OpenVLAOFTConfig(DINOV2_L_REG4, SIGLIP_SO400M, name="openvla-oft"),
    "openvla-oft-small": OpenVLAOFTConfig(
        TowerConfig(
            "omnimodel/vit_small_patch14_reg4_dinov2",
            512,
            12,
            8,
            2048,
            n_registers=4,
            class_token=True,
            layer_scale=True,
        ),
        TowerConfig("omnimodel/vit_small_patch14_siglip_224", 512, 12, 8, 1792, attn_pool=True),
        hidden=1024,
        layers=16,
        heads=16,
        kv_heads=16,
        mlp=2816,
        name="openvla-oft-small",
    ),
    "openvla-oft-tiny": OpenVLAOFTConfig(
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
        vocab=576,
        text_vocab=512,
        pad_token_id=512,
        name="openvla-oft-tiny",
    ),
}


def preset(name: str) -> OpenVLAOFTConfig:
    """A copy of a named preset's config."""
    from omnimodel.errors import ConfigError

    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return OpenVLAOFTConfig.from_dict(PRESETS[name].to_dict())


def init_weights(model: OpenVLAOFT, seed: int) -> None:
    """Deterministic random init by module type (CPU generator, so every machine gets the same)."""
    gen = torch.Generator().manual_seed(seed)

    def randn(shape, std):
        return torch.randn(shape, generator=gen) * std

    with torch.no_grad():
        for module in model.modules():
            params = dict(module.named_parameters(recurse=False))
            if not params:
                continue
            if isinstance(module, (nn.LayerNorm,)) or type(module).__name__.endswith("RMSNorm"):
                params["weight"].copy_(1.0 + randn(params["weight"].shape, 0.05))
                if "bias" in params:
                    params["bias"].copy_(randn(params["bias"].shape, 0.02))
            elif isinstance(module, (nn.Linear, nn.Conv2d)):
                w = params["weight"]
                w.copy_(randn(w.shape, 1.0 / math.sqrt(w[0].numel())))
                if "bias" in params:
                    params["bias"].copy_(randn(params["bias"].shape, 0.02))
            elif isinstance(module, nn.Embedding):
                params["weight"].copy_(randn(params["weight"].shape, 0.5))
            elif isinstance(module, LayerScale):
                params["scale_factor"].copy_(
                    0.1 + 0.05 * torch.rand(params["scale_factor"].shape, generator=gen)
                )
            else:  # tokens and position embeddings of the towers, pooling latent
                for p in params.values():
                    p.copy_(randn(p.shape, 0.5))
