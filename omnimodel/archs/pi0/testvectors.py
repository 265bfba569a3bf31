"""The test vectors of the skills π0 / π0.5's graph calls, from a micro π0.5 (PyTorch reference, fp32).

Each vector holds the module's weights under their GGUF names, the runtime metadata, the inputs
`in.N` and the reference output `out`; the native build runs it through omni_run_module.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from omnimodel.archs.pi0 import zoo
from omnimodel.archs.pi0.metadata import arch_name, runtime_metadata
from omnimodel.archs.pi0.model import (
    PI0,
    GemmaConfig,
    PiConfig,
    SiglipConfig,
    joint_layer,
    make_attn_mask,
    rope_cos_sin,
)
from omnimodel.archs.pi0.names import gguf_names
from omnimodel.codegen.testvectors import write_vector
from omnimodel.paths import skills_dir

VISION = "paligemma_with_expert.paligemma.model.vision_tower.vision_model"
LLM = "paligemma_with_expert.paligemma.model.language_model"
EXPERT = "paligemma_with_expert.gemma_expert.model"


def micro_config(pi05: bool = True) -> PiConfig:
    """A few-kilobyte π0.5 (or π0): 28-pixel images, 2-layer stacks, MQA with 16-wide heads."""
    return PiConfig(
        pi05=pi05,
        vision=SiglipConfig(width=32, depth=1, heads=2, mlp=64, patch=14, image=28),
        llm=GemmaConfig(width=64, depth=2, mlp=128, heads=4, kv_heads=1, head_dim=16),
        expert=GemmaConfig(width=32, depth=2, mlp=64, heads=4, kv_heads=1, head_dim=16),
        vocab=128,
        chunk=4,
        max_token_len=8,
        num_cameras=2,
        name="pi05-micro" if pi05 else "pi0-micro",
    )


def micro_model(pi05: bool = True, seed: int = 0) -> PI0:
    """The micro model with the presets' deterministic random weights (norm scales and adaRMS Dense non-zero)."""
    model = PI0(micro_config(pi05))
    zoo.init_weights(model, seed)
    return model.eval()


def _weights(model: PI0, *modules: str) -> dict[str, np.ndarray]:
    """The GGUF-named weights of the given modules (and their children)."""
    out = {}
    for key, value in model.state_dict().items():
        if any(key == m or key.startswith(m + ".") for m in modules):
            for name in gguf_names(key):
                out[name] = value.detach().float().numpy()
    return out


def _prefix_kv(model: PI0, emb: torch.Tensor):
    """The prefix pass from embeddings: every token valid, positions 0.. (what module `denoise` does natively)."""
    from omnimodel.archs.pi0.model import PrefixCache

    b, n = emb.shape[:2]
    pad = torch.ones(b, n, dtype=torch.bool)
    _, _, kv = model.run_layers(emb, None, make_attn_mask(pad, torch.zeros_like(pad)), torch.arange(n)[None])
    return PrefixCache(kv, pad)


def write_all(root: Path | None = None, seed: int = 0) -> list[Path]:
    """(Re)write the vectors of siglip_encoder_layer, gemma_decoder_layer, ada_rms_norm, flow_time_mlp, flow_euler_denoise."""
    root = Path(root) if root else skills_dir()
    model = micro_model(True, seed)
    cfg = model.cfg
    meta = runtime_metadata(cfg, zoo.random_stats(seed).to_dict())
    gen = torch.Generator().manual_seed(seed)
    written = []

    def vector(
        skill: str, module: str, cls: str, weights: dict, inputs: list[torch.Tensor], out: torch.Tensor
    ) -> None:
        path = root / skill / "test_vector.gguf"
        write_vector(
            path,
            module,
            cls,
            weights,
            meta,
            [x.detach().float().numpy() for x in inputs],
            out.detach().float().numpy(),
            arch_name=arch_name(cfg),
        )
        written.append(path)

    with torch.no_grad():
        n_tok = cfg.vision.n_patches
        layer = f"{VISION}.encoder.layers.0"
        x = torch.randn(1, n_tok, cfg.vision.width, generator=gen)
        vector(
            "siglip_encoder_layer",
            layer,
            "SiglipEncoderLayer",
            _weights(model, layer),
            [x],
            model.get_submodule(layer)(x),
        )

        # a whole PaliGemma layer, bidirectional over 7 tokens at positions 0..6
        layer = f"{LLM}.layers.0"
        x = torch.randn(1, 7, cfg.llm.width, generator=gen)
        pad = torch.ones(1, 7, dtype=torch.bool)
        cos, sin = rope_cos_sin(torch.arange(7)[None], cfg.llm.head_dim, cfg.rope_theta)
        (y, _), _ = joint_layer(
            (model.llm.layers[0], None),
            (x, None),
            make_attn_mask(pad, torch.zeros_like(pad)),
            cos,
            sin,
            (None, None),
        )
        vector("gemma_decoder_layer", layer, "GemmaDecoderLayer", _weights(model, layer), [x], y)

        t = torch.tensor([0.7])
        temb = model.time_embedding(t)
        cond = F.silu(model.time_mlp_out(F.silu(model.time_mlp_in(temb))))
        vector(
            "flow_time_mlp",
            "time_mlp",
            "FlowTimeMLP",
            _weights(model, "time_mlp_in", "time_mlp_out"),
            [t],
            cond,
        )

        norm = f"{EXPERT}.norm"
        x = torch.randn(1, cfg.chunk, cfg.expert.width, generator=gen)
        vector(
            "ada_rms_norm",
            norm,
            "AdaRMSNorm",
            _weights(model, norm),
            [x, cond],
            model.get_submodule(norm)(x, cond)[0],
        )

        emb = torch.randn(1, 9, cfg.llm.width, generator=gen)
        noise = torch.randn(1, cfg.chunk, cfg.action_dim, generator=gen)
        cache = _prefix_kv(model, emb)
        xt, dt = noise, -1.0 / cfg.num_steps
        for s in range(cfg.num_steps):
            xt = xt + dt * model.denoise_step(cache, None, xt, torch.full((1,), 1.0 + s * dt))
        weights = _weights(
            model, LLM + ".layers", EXPERT, "action_in_proj", "action_out_proj", "time_mlp_in", "time_mlp_out"
        )
        vector("flow_euler_denoise", "denoise", "FlowEulerDenoise", weights, [emb, noise], xt)
    return written


def write_pi0(root: Path | None = None, seed: int = 0) -> list[Path]:
    """π0 shares π0.5's skills and vectors (π0.5's micro instance writes them); nothing of its own."""
    return []
