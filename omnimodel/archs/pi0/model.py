"""π0 and π0.5 in plain PyTorch: SigLIP + PaliGemma prefix, a Gemma action expert, flow matching.

Faithful to openpi's PI0Pytorch in fp32 (shared/specs/pi0-pi05.md): one class switched by
`cfg.pi05`. The module tree spells openpi's state-dict keys exactly (LeRobot's minus `model.`),
so a checkpoint loads without renaming. Upstream's dead expert `lm_head` is not built, and the
PaliGemma text table lives only in `embed_tokens` (its `lm_head` is tied to it upstream).

The two Gemmas run layer by layer over one joint sequence: each token stream uses its own norms,
projections and MLP, while q/k/v of both streams are concatenated and share one attention. The
prefix (images + text) is run once and its per-layer K/V (after RoPE) is reused, read-only, by
every denoising step of the suffix (π0: state token + action tokens; π0.5: action tokens).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

# openpi's mask value: fully masked rows softmax to uniform instead of NaN (pitfall 3)
MASK_VALUE = -2.3819763e38
PALIGEMMA_VOCAB = 257_152


@dataclass(frozen=True)
class SiglipConfig:
    """The SigLIP vision tower (no pooling head; post_layernorm then the projector)."""

    width: int = 1152
    depth: int = 27
    heads: int = 16
    mlp: int = 4304
    patch: int = 14
    image: int = 224
    ln_eps: float = 1e-6

    @property
    def n_patches(self) -> int:
        return (self.image // self.patch) ** 2


@dataclass(frozen=True)
class GemmaConfig:
    """One Gemma-1 stack (openpi gemma.py Config)."""

    width: int
    depth: int
    mlp: int
    heads: int
    kv_heads: int
    head_dim: int


GEMMA_2B = GemmaConfig(width=2048, depth=18, mlp=16_384, heads=8, kv_heads=1, head_dim=256)
GEMMA_300M = GemmaConfig(width=1024, depth=18, mlp=4096, heads=8, kv_heads=1, head_dim=256)
SO400M = SiglipConfig()
VARIANTS = {"gemma_2b": GEMMA_2B, "gemma_300m": GEMMA_300M}

NORM_MODES = ("mean_std", "quantile")


@dataclass(frozen=True)
class PiConfig:
    """Every size of a π0 / π0.5 model and the few policy settings its checkpoint fixes."""

    pi05: bool
    vision: SiglipConfig = SO400M
    llm: GemmaConfig = GEMMA_2B
    expert: GemmaConfig = GEMMA_300M
    vocab: int = PALIGEMMA_VOCAB
    action_dim: int = 32  # padded action width (max_action_dim)
    state_dim: int = 32  # padded state width (max_state_dim; openpi uses action_dim)
    chunk: int = 50  # action horizon H
    max_token_len: int = 48
    num_cameras: int = 3
    num_steps: int = 10
    min_period: float = 4e-3
    max_period: float = 4.0
    rms_eps: float = 1e-6
    rope_theta: float = 10_000.0
    norm_mode: str = "mean_std"  # "mean_std" or "quantile" (state and actions)
    discrete_state_input: bool = False  # π0.5: state written into the prompt as 256-bin integers
    name: str = "pi0"

    @property
    def n_image_tokens(self) -> int:
        return self.num_cameras * self.vision.n_patches

    @property
    def prefix_len(self) -> int:
        return self.n_image_tokens + self.max_token_len

    @property
    def suffix_len(self) -> int:
        return self.chunk + (0 if self.pi05 else 1)

    def replace(self, **changes) -> PiConfig:
        return dataclasses.replace(self, **changes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


_TINY_VISION = SiglipConfig(width=256, depth=2, heads=4, mlp=512, patch=14, image=224)
_TINY_LLM = GemmaConfig(width=512, depth=3, mlp=1024, heads=8, kv_heads=1, head_dim=64)
_TINY_EXPERT = GemmaConfig(width=256, depth=3, mlp=512, heads=8, kv_heads=1, head_dim=64)

PRESETS: dict[str, PiConfig] = {
    "pi05": PiConfig(
        pi05=True, chunk=50, max_token_len=200, norm_mode="quantile", discrete_state_input=True, name="pi05"
    ),
    "pi0": PiConfig(pi05=False, chunk=50, max_token_len=48, norm_mode="mean_std", name="pi0"),
    "pi05-tiny": PiConfig(
        pi05=True,
        vision=_TINY_VISION,
        llm=_TINY_LLM,
        expert=_TINY_EXPERT,
        vocab=1024,
        chunk=10,
        max_token_len=200,
        norm_mode="quantile",
        discrete_state_input=True,
        name="pi05-tiny",
    ),
    "pi0-tiny": PiConfig(
        pi05=False,
        vision=_TINY_VISION,
        llm=_TINY_LLM,
        expert=_TINY_EXPERT,
        vocab=1024,
        chunk=50,
        max_token_len=48,
        norm_mode="mean_std",
        name="pi0-tiny",
    ),
}


def preset(name: str) -> PiConfig:
    """A preset's config (ConfigError naming the choices for an unknown name)."""
    from omnimodel.errors import ConfigError

    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}: choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


# ----------------------------------------------------------------------------- SigLIP


class SiglipEmbeddings(nn.Module):
    """Patch conv + learned position embedding (no CLS token)."""

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.patch_embedding = nn.Conv2d(3, cfg.width, kernel_size=cfg.patch, stride=cfg.patch)
        self.position_embedding = nn.Embedding(cfg.n_patches, cfg.width)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        x = self.patch_embedding(pixels.to(self.patch_embedding.weight.dtype)).flatten(2).transpose(1, 2)
        return x + self.position_embedding.weight[None]


class SiglipAttention(nn.Module):
    """Multi-head self-attention with biases, no mask."""

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.heads = cfg.heads
        self.q_proj = nn.Linear(cfg.width, cfg.width)
        self.k_proj = nn.Linear(cfg.width, cfg.width)
        self.v_proj = nn.Linear(cfg.width, cfg.width)
        self.out_proj = nn.Linear(cfg.width, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, s, d = x.shape
        hd = d // self.heads

        def split(t: torch.Tensor) -> torch.Tensor:
            return t.view(b, s, self.heads, hd).transpose(1, 2)

        q, k, v = split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x))
        probs = torch.softmax((q @ k.transpose(-1, -2)).float() * hd**-0.5, dim=-1).to(v.dtype)
        return self.out_proj((probs @ v).transpose(1, 2).reshape(b, s, d))


class SiglipMLP(nn.Module):
    """fc1 -> tanh-GELU -> fc2."""

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.fc1 = nn.Linear(cfg.width, cfg.mlp)
        self.fc2 = nn.Linear(cfg.mlp, cfg.width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class SiglipEncoderLayer(nn.Module):
    """Pre-LN ViT block."""

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.self_attn = SiglipAttention(cfg)
        self.layer_norm2 = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)
        self.mlp = SiglipMLP(cfg)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x + self.self_attn(self.layer_norm1(x))
        return x + self.mlp(self.layer_norm2(x))


class SiglipEncoder(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.layers = nn.ModuleList(SiglipEncoderLayer(cfg) for _ in range(cfg.depth))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.layers:
            x = layer(x)
        return x


class SiglipVisionTransformer(nn.Module):
    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.embeddings = SiglipEmbeddings(cfg)
        self.encoder = SiglipEncoder(cfg)
        self.post_layernorm = nn.LayerNorm(cfg.width, eps=cfg.ln_eps)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.post_layernorm(self.encoder(self.embeddings(pixels)))


class SiglipVisionModel(nn.Module):
    """(B, 3, H, W) in [-1, 1] -> (B, n_patches, width)."""

    def __init__(self, cfg: SiglipConfig):
        super().__init__()
        self.vision_model = SiglipVisionTransformer(cfg)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        return self.vision_model(pixels)


class MultiModalProjector(nn.Module):
    """One linear layer vision width -> LLM width (PaliGemma `img/head`; no activation, no scaling)."""

    def __init__(self, vision_width: int, llm_width: int):
        super().__init__()
        self.linear = nn.Linear(vision_width, llm_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)


# ----------------------------------------------------------------------------- Gemma


def rms_normalize(x: torch.Tensor, eps: float) -> torch.Tensor:
    """x / rms(x), the variance taken in fp32."""
    var = torch.mean(torch.square(x.float()), dim=-1, keepdim=True)
    return x * torch.rsqrt(var + eps)


class RMSNorm(nn.Module):
    """Gemma RMSNorm: normed * (1 + w), w stored raw (zero-init)."""

    def __init__(self, dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.zeros(dim))

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, None]:
        return (rms_normalize(x, self.eps) * (1.0 + self.weight.float())).type_as(x), None


class AdaRMSNorm(nn.Module):
    """π0.5 adaptive RMSNorm: Dense(cond) -> (scale, shift, gate); normed * (1 + scale) + shift, and the gate."""

    def __init__(self, dim: int, cond_dim: int, eps: float = 1e-6):
        super().__init__()
        self.eps = eps
        self.dense = nn.Linear(cond_dim, 3 * dim)

    def forward(self, x: torch.Tensor, cond: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        if cond is None:
            raise ValueError("AdaRMSNorm needs the time condition (adarms_cond)")
        mod = self.dense(cond.to(self.dense.weight.dtype))
        if x.dim() == 3:
            mod = mod[:, None, :]
        scale, shift, gate = mod.chunk(3, dim=-1)
        normed = rms_normalize(x, self.eps) * (1 + scale.float()) + shift.float()
        return normed.to(x.dtype), gate.to(x.dtype)


class GemmaAttention(nn.Module):
    """The per-stream projections of one shared attention op (no biases; MQA)."""

    def __init__(self, cfg: GemmaConfig):
        super().__init__()
        self.heads, self.kv_heads, self.head_dim = cfg.heads, cfg.kv_heads, cfg.head_dim
        self.q_proj = nn.Linear(cfg.width, cfg.heads * cfg.head_dim, bias=False)
        self.k_proj = nn.Linear(cfg.width, cfg.kv_heads * cfg.head_dim, bias=False)
        self.v_proj = nn.Linear(cfg.width, cfg.kv_heads * cfg.head_dim, bias=False)
        self.o_proj = nn.Linear(cfg.heads * cfg.head_dim, cfg.width, bias=False)


class GemmaMLP(nn.Module):
    """GeGLU: down(gelu_tanh(gate(x)) * up(x))."""

    def __init__(self, cfg: GemmaConfig):
        super().__init__()
        self.gate_proj = nn.Linear(cfg.width, cfg.mlp, bias=False)
        self.up_proj = nn.Linear(cfg.width, cfg.mlp, bias=False)
        self.down_proj = nn.Linear(cfg.mlp, cfg.width, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down_proj(F.gelu(self.gate_proj(x), approximate="tanh") * self.up_proj(x))


def _norm(cfg: GemmaConfig, eps: float, cond_dim: int | None) -> nn.Module:
    return RMSNorm(cfg.width, eps) if cond_dim is None else AdaRMSNorm(cfg.width, cond_dim, eps)


class GemmaDecoderLayer(nn.Module):
    """Weights of one pre-norm Gemma-1 block; the joint forward lives in `joint_layer`."""

    def __init__(self, cfg: GemmaConfig, eps: float, cond_dim: int | None):
        super().__init__()
        self.input_layernorm = _norm(cfg, eps, cond_dim)
        self.self_attn = GemmaAttention(cfg)
        self.post_attention_layernorm = _norm(cfg, eps, cond_dim)
        self.mlp = GemmaMLP(cfg)


class GemmaStack(nn.Module):
    """Layers and final norm of one Gemma (the PaliGemma LLM also owns the text table)."""

    def __init__(self, cfg: GemmaConfig, eps: float, cond_dim: int | None = None, vocab: int | None = None):
        super().__init__()
        if vocab is not None:
            self.embed_tokens = nn.Embedding(vocab, cfg.width)
        self.layers = nn.ModuleList(GemmaDecoderLayer(cfg, eps, cond_dim) for _ in range(cfg.depth))
        self.norm = _norm(cfg, eps, cond_dim)


class PaliGemmaModel(nn.Module):
    def __init__(self, cfg: PiConfig):
        super().__init__()
        self.vision_tower = SiglipVisionModel(cfg.vision)
        self.multi_modal_projector = MultiModalProjector(cfg.vision.width, cfg.llm.width)
        self.language_model = GemmaStack(cfg.llm, cfg.rms_eps, vocab=cfg.vocab)


class PaliGemma(nn.Module):
    """PaliGemmaForConditionalGeneration's tree, minus the LM head (tied to embed_tokens upstream)."""

    def __init__(self, cfg: PiConfig):
        super().__init__()
        self.model = PaliGemmaModel(cfg)


class GemmaExpert(nn.Module):
    """The action expert (GemmaForCausalLM's tree, minus the dead lm_head and the absent embedder)."""

    def __init__(self, cfg: PiConfig):
        super().__init__()
        self.model = GemmaStack(cfg.expert, cfg.rms_eps, cond_dim=cfg.expert.width if cfg.pi05 else None)


class PaliGemmaWithExpert(nn.Module):
    def __init__(self, cfg: PiConfig):
        super().__init__()
        self.paligemma = PaliGemma(cfg)
        self.gemma_expert = GemmaExpert(cfg)


# ----------------------------------------------------------------------------- shared maths


def rope_cos_sin(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """cos, sin of shape (B, S, head_dim) for the split-halves (NEOX) convention, in fp32."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, head_dim, 2, dtype=torch.int64).float() / head_dim))
    freqs = positions.float()[..., None] * inv_freq.to(positions.device)
    emb = torch.cat([freqs, freqs], dim=-1)
    return emb.cos(), emb.sin()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate (B, H, S, hd) by split halves: [x1 cos - x2 sin, x2 cos + x1 sin]."""
    x1, x2 = x.chunk(2, dim=-1)
    rotated = torch.cat([-x2, x1], dim=-1)
    cos, sin = cos[:, None].to(x.dtype), sin[:, None].to(x.dtype)
    return x * cos + rotated * sin


def make_attn_mask(pad_mask: torch.Tensor, ar_mask: torch.Tensor) -> torch.Tensor:
    """big_vision's prefix-LM/block-causal mask: i sees j iff cumsum(ar)[j] <= cumsum(ar)[i] and both are valid."""
    cum = torch.cumsum(ar_mask.long(), dim=1)
    allowed = cum[:, None, :] <= cum[:, :, None]
    return allowed & (pad_mask[:, None, :] & pad_mask[:, :, None])


def sinusoidal_time_embedding(
    t: torch.Tensor, dim: int, min_period: float, max_period: float
) -> torch.Tensor:
    """(B,) -> (B, dim): [sin, cos] of t * 2π / period, periods geometric in [min, max], computed in fp64."""
    if dim % 2:
        raise ValueError(f"time embedding width {dim} must be even")
    fraction = torch.linspace(0.0, 1.0, dim // 2, dtype=torch.float64, device=t.device)
    period = min_period * (max_period / min_period) ** fraction
    arg = (1.0 / period * 2 * math.pi)[None, :] * t[:, None]
    return torch.cat([torch.sin(arg), torch.cos(arg)], dim=1).to(t.dtype)


def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor, scale: float
) -> torch.Tensor:
    """Eager attention (B, H, Sq, hd) x (B, KV, Sk, hd); mask (B, Sq, Sk) bool; logits and softmax in fp32."""
    groups = q.shape[1] // k.shape[1]
    k = k.repeat_interleave(groups, dim=1)
    v = v.repeat_interleave(groups, dim=1)
    logits = (q @ k.transpose(-1, -2)).float() * scale
    logits = torch.where(
        mask[:, None], logits, torch.tensor(MASK_VALUE, dtype=logits.dtype, device=logits.device)
    )
    probs = torch.softmax(logits, dim=-1).to(v.dtype)
    return probs @ v


@dataclass
class LayerKV:
    """One layer's prefix keys (after RoPE) and values: (B, KV, S, hd) each."""

    k: torch.Tensor
    v: torch.Tensor


def joint_layer(
    layers: Sequence[GemmaDecoderLayer | None],
    hidden: Sequence[torch.Tensor | None],
    mask: torch.Tensor,
    cos: torch.Tensor,
    sin: torch.Tensor,
    conds: Sequence[torch.Tensor | None],
    past: LayerKV | None = None,
    kv_only: bool = False,
) -> tuple[list[torch.Tensor | None], LayerKV]:
    """One mixture-of-transformers layer: per-stream norms/projections, one attention over the joint sequence.

    `past` (prefix K/V) is prepended to the keys and values and never modified. Returns the new
    hidden states per stream and this call's own K/V (what a prefix pass caches). With `kv_only`
    only the norms and K/V projections run and the hidden states come back unchanged (the last
    layer of a prefix pass: nothing after its K/V is ever read).
    """
    qs, ks, vs, gates = [], [], [], []
    for layer, x, cond in zip(layers, hidden, conds, strict=True):
        if x is None:
            gates.append(None)
            continue
        attn = layer.self_attn
        h, gate = layer.input_layernorm(x, cond)
        gates.append(gate)
        b, s, _ = h.shape
        if not kv_only:
            qs.append(attn.q_proj(h).view(b, s, attn.heads, attn.head_dim).transpose(1, 2))
        ks.append(attn.k_proj(h).view(b, s, attn.kv_heads, attn.head_dim).transpose(1, 2))
        vs.append(attn.v_proj(h).view(b, s, attn.kv_heads, attn.head_dim).transpose(1, 2))
    k, v = torch.cat(ks, dim=2), torch.cat(vs, dim=2)
    k = apply_rope(k, cos, sin)
    own = LayerKV(k, v)
    if kv_only:
        return list(hidden), own
    q = apply_rope(torch.cat(qs, dim=2), cos, sin)
    if past is not None:
        k, v = torch.cat([past.k, k], dim=2), torch.cat([past.v, v], dim=2)
    head_dim = q.shape[-1]
    out = attention(q, k, v, mask, head_dim**-0.5)
    b = out.shape[0]
    out = out.transpose(1, 2).reshape(b, out.shape[2], -1)

    result: list[torch.Tensor | None] = []
    start = 0
    for layer, x, cond, gate in zip(layers, hidden, conds, gates, strict=True):
        if x is None:
            result.append(None)
            continue
        end = start + x.shape[1]
        y = layer.self_attn.o_proj(out[:, start:end].to(layer.self_attn.o_proj.weight.dtype))
        x = x + y if gate is None else x + y * gate
        h, gate2 = layer.post_attention_layernorm(x, cond)
        y = layer.mlp(h)
        result.append(x + y if gate2 is None else x + y * gate2)
        start = end
    return result, own


# ----------------------------------------------------------------------------- the policy network


@dataclass
class PrefixCache:
    """What the prefix pass leaves for the denoising steps: per-layer K/V and the prefix validity mask."""

    kv: list[LayerKV]
    pad_mask: torch.Tensor  # (B, S_prefix) bool


class PI0(nn.Module):
    """π0 (cfg.pi05 False) or π0.5 (True); openpi PI0Pytorch's parameters and maths, fp32 by default."""

    def __init__(self, cfg: PiConfig):
        super().__init__()
        self.cfg = cfg
        d = cfg.expert.width
        self.paligemma_with_expert = PaliGemmaWithExpert(cfg)
        self.action_in_proj = nn.Linear(cfg.action_dim, d)
        self.action_out_proj = nn.Linear(d, cfg.action_dim)
        if cfg.pi05:
            self.time_mlp_in = nn.Linear(d, d)
            self.time_mlp_out = nn.Linear(d, d)
        else:
            self.state_proj = nn.Linear(cfg.state_dim, d)
            self.action_time_mlp_in = nn.Linear(2 * d, d)
            self.action_time_mlp_out = nn.Linear(d, d)

    # ---- short names for the two stacks
    @property
    def llm(self) -> GemmaStack:
        return self.paligemma_with_expert.paligemma.model.language_model

    @property
    def expert(self) -> GemmaStack:
        return self.paligemma_with_expert.gemma_expert.model

    # ---- embeddings
    def embed_image(self, pixels: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) in [-1, 1] -> (B, n_patches, llm width); NOT scaled by sqrt(width)."""
        pg = self.paligemma_with_expert.paligemma.model
        return pg.multi_modal_projector(pg.vision_tower(pixels))

    def embed_text(self, tokens: torch.Tensor) -> torch.Tensor:
        """Token ids -> table rows x sqrt(width), the factor cast to the table dtype first."""
        table = self.llm.embed_tokens
        return table(tokens) * torch.tensor(math.sqrt(table.embedding_dim), dtype=table.weight.dtype)

    def embed_prefix(
        self,
        images: Sequence[torch.Tensor],
        image_masks: Sequence[torch.Tensor],
        tokens: torch.Tensor,
        token_mask: torch.Tensor,
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """[image tokens per camera..., text tokens]: embeddings, validity (B, S), ar mask (B, S) all zero."""
        embs, pads = [], []
        for img, m in zip(images, image_masks, strict=True):
            e = self.embed_image(img)
            embs.append(e)
            pads.append(m.bool()[:, None].expand(e.shape[0], e.shape[1]))
        embs.append(self.embed_text(tokens))
        pads.append(token_mask.bool())
        emb = torch.cat(embs, dim=1)
        pad = torch.cat(pads, dim=1)
        return emb, pad, torch.zeros_like(pad)

    def time_embedding(self, t: torch.Tensor) -> torch.Tensor:
        """(B,) -> (B, expert width) sin/cos embedding of the flow time."""
        return sinusoidal_time_embedding(t, self.cfg.expert.width, self.cfg.min_period, self.cfg.max_period)

    def embed_suffix(
        self, state: torch.Tensor | None, x_t: torch.Tensor, t: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Suffix embeddings, validity, ar mask (π0 [1, 1, 0...], π0.5 [1, 0...]) and the adaRMS condition."""
        temb = self.time_embedding(t).to(self.action_in_proj.weight.dtype)
        action = self.action_in_proj(x_t.to(self.action_in_proj.weight.dtype))
        b, h = action.shape[:2]
        if self.cfg.pi05:
            cond = F.silu(self.time_mlp_out(F.silu(self.time_mlp_in(temb))))
            emb, ar = action, [1] + [0] * (h - 1)
        else:
            cond = None
            mixed = torch.cat([action, temb[:, None, :].expand_as(action)], dim=2)
            tokens = self.action_time_mlp_out(F.silu(self.action_time_mlp_in(mixed)))
            state_tok = self.state_proj(state.to(self.state_proj.weight.dtype))[:, None, :]
            emb, ar = torch.cat([state_tok, tokens], dim=1), [1, 1] + [0] * (h - 1)
        pad = torch.ones(b, emb.shape[1], dtype=torch.bool, device=emb.device)
        ar_mask = torch.tensor(ar, dtype=torch.bool, device=emb.device)[None].expand(b, -1)
        return emb, pad, ar_mask, cond

    def action_out(self, hidden: torch.Tensor) -> torch.Tensor:
        """Velocity from the expert's normed action tokens; fp32 out (openpi runs this projection in fp32)."""
        return self.action_out_proj(hidden.float().to(self.action_out_proj.weight.dtype)).float()

    # ---- transformer passes
    def run_layers(
        self,
        prefix: torch.Tensor | None,
        suffix: torch.Tensor | None,
        mask: torch.Tensor,
        positions: torch.Tensor,
        cond: torch.Tensor | None = None,
        past: list[LayerKV] | None = None,
    ) -> tuple[torch.Tensor | None, torch.Tensor | None, list[LayerKV]]:
        """Both stacks layer by layer over [prefix, suffix] (either may be None); final norms applied.

        mask (B, S_query, S_past + S_query) bool; positions (B, S_query). Returns the normed outputs
        and each layer's own K/V. A prefix-only pass yields K/V alone: the last layer stops after its
        K/V and the LLM's final norm is skipped (openpi computes and discards them, spec §3), so
        the prefix output is None.
        """
        cos, sin = rope_cos_sin(positions, self.cfg.llm.head_dim, self.cfg.rope_theta)
        # each stream enters in its own stack's weight dtype (openpi casts the embeddings the same way)
        hidden = [
            None if prefix is None else prefix.to(self.llm.layers[0].self_attn.q_proj.weight.dtype),
            None if suffix is None else suffix.to(self.expert.layers[0].self_attn.q_proj.weight.dtype),
        ]
        conds = [None, cond]
        kvs = []
        prefix_only = suffix is None
        last = len(self.llm.layers) - 1
        for i, (a, b) in enumerate(zip(self.llm.layers, self.expert.layers, strict=True)):
            past_i = None if past is None else past[i]
            hidden, kv = joint_layer((a, b), hidden, mask, cos, sin, conds, past_i, prefix_only and i == last)
            kvs.append(kv)
        out_prefix = None if hidden[0] is None or prefix_only else self.llm.norm(hidden[0])[0]
        out_suffix = None if hidden[1] is None else self.expert.norm(hidden[1], cond)[0]
        return out_prefix, out_suffix, kvs

    def prefix_pass(
        self,
        images: Sequence[torch.Tensor],
        image_masks: Sequence[torch.Tensor],
        tokens: torch.Tensor,
        token_mask: torch.Tensor,
    ) -> PrefixCache:
        """Run the PaliGemma LLM over images + text once; keep every layer's K/V (read-only afterwards)."""
        emb, pad, ar = self.embed_prefix(images, image_masks, tokens, token_mask)
        mask = make_attn_mask(pad, ar)
        positions = torch.cumsum(pad.long(), dim=1) - 1
        _, _, kv = self.run_layers(emb, None, mask, positions)
        return PrefixCache(kv, pad)

    def denoise_step(
        self, cache: PrefixCache, state: torch.Tensor | None, x_t: torch.Tensor, t: torch.Tensor
    ) -> torch.Tensor:
        """The velocity v(x_t, t) (B, H, action_dim): the expert over the suffix against the cached prefix."""
        emb, pad, ar, cond = self.embed_suffix(state, x_t, t)
        b, s = pad.shape
        to_prefix = cache.pad_mask[:, None, :].expand(b, s, cache.pad_mask.shape[1])
        mask = torch.cat([to_prefix, make_attn_mask(pad, ar)], dim=2)
        positions = cache.pad_mask.long().sum(dim=1, keepdim=True) + torch.cumsum(pad.long(), dim=1) - 1
        _, out, _ = self.run_layers(None, emb, mask, positions, cond, past=cache.kv)
        return self.action_out(out[:, -self.cfg.chunk :])

    def joint_velocity(
        self,
        images: Sequence[torch.Tensor],
        image_masks: Sequence[torch.Tensor],
        tokens: torch.Tensor,
        token_mask: torch.Tensor,
        state: torch.Tensor | None,
        x_t: torch.Tensor,
        t: torch.Tensor,
    ) -> torch.Tensor:
        """The velocity from one pass over prefix + suffix together (the training forward), no cache."""
        pemb, ppad, par = self.embed_prefix(images, image_masks, tokens, token_mask)
        semb, spad, sar, cond = self.embed_suffix(state, x_t, t)
        pad = torch.cat([ppad, spad], dim=1)
        mask = make_attn_mask(pad, torch.cat([par, sar], dim=1))
        positions = torch.cumsum(pad.long(), dim=1) - 1
        _, out, _ = self.run_layers(pemb, semb, mask, positions, cond)
        return self.action_out(out[:, -self.cfg.chunk :])

    @torch.no_grad()
    def sample_actions(
        self,
        images: Sequence[torch.Tensor] | torch.Tensor,
        image_masks: Sequence[torch.Tensor] | torch.Tensor,
        tokens: torch.Tensor,
        token_mask: torch.Tensor,
        state: torch.Tensor | None = None,
        noise: torch.Tensor | None = None,
        num_steps: int | None = None,
    ) -> torch.Tensor:
        """Normalised actions (B, H, action_dim): Euler from t=1 (noise) to t=0, x <- x + dt*v, dt = -1/steps.

        images: per camera (B, 3, H, W) in [-1, 1] (or one (B, N, 3, H, W) tensor); image_masks: per
        camera (B,) bool (or (B, N)); tokens/token_mask: (B, L); state: (B, state_dim) normalised
        and padded (π0 only). t_s = 1 + s*dt in fp32, as LeRobot computes it (openpi accumulates;
        the two differ by ~1e-7).
        """
        images, image_masks = _per_camera(images, image_masks)
        steps = num_steps or self.cfg.num_steps
        b = tokens.shape[0]
        if noise is None:
            noise = torch.randn(
                b, self.cfg.chunk, self.cfg.action_dim, dtype=torch.float32, device=tokens.device
            )
        if not self.cfg.pi05 and state is None:
            raise ValueError("π0 needs the (normalised, padded) state")
        cache = self.prefix_pass(images, image_masks, tokens, token_mask)
        dt = -1.0 / steps
        x = noise
        for s in range(steps):
            t = torch.full((b,), 1.0 + s * dt, dtype=torch.float32, device=noise.device)
            x = x + dt * self.denoise_step(cache, state, x, t)
        return x

    def forward(self, images, image_masks, tokens, token_mask, state=None, noise=None) -> torch.Tensor:
        """sample_actions (the analyzer's sample runs the whole policy)."""
        return self.sample_actions(images, image_masks, tokens, token_mask, state, noise)


def _per_camera(images, image_masks) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    if isinstance(images, torch.Tensor) and images.dim() == 5:
        images = list(images.unbind(1))
    if isinstance(image_masks, torch.Tensor) and image_masks.dim() == 2:
        image_masks = list(image_masks.unbind(1))
    return list(images), list(image_masks)


def count_parameters(cfg: PiConfig) -> dict[str, int]:
    """Parameters per component, built on the meta device (no memory)."""
    with torch.device("meta"):
        model = PI0(cfg)
    pg = model.paligemma_with_expert.paligemma.model
    comps = {
        "vision": sum(p.numel() for p in pg.vision_tower.parameters()),
        "projector": sum(p.numel() for p in pg.multi_modal_projector.parameters()),
        "llm": sum(p.numel() for p in pg.language_model.parameters()),
        "expert": sum(p.numel() for p in model.paligemma_with_expert.gemma_expert.parameters()),
    }
    comps["projections"] = sum(p.numel() for p in model.parameters()) - sum(comps.values())
    return comps
