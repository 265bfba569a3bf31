"""This arch's own skill's test vector: the LM head of a micro OpenVLA (the shared skills' vectors are OFT's)."""

from __future__ import annotations

from pathlib import Path

import torch

from omnimodel.archs.openvla.metadata import runtime_metadata
from omnimodel.archs.openvla.model import OpenVLA, OpenVLAConfig, init_weights
from omnimodel.archs.openvla.names import ARCH, tensor
from omnimodel.archs.openvla.zoo import random_norm_stats
from omnimodel.archs.openvla_oft.testvectors import micro_config as oft_micro_config
from omnimodel.codegen.testvectors import write_vector
from omnimodel.paths import skills_dir

SKILL_MODULES = {"lm_head_greedy": "language_model.lm_head"}  # skill -> module whose forward is recorded


def micro_config() -> OpenVLAConfig:
    """OFT's micro sizes (28x28 images, 32-wide trunk) with a vocabulary that leaves room for 256 bins."""
    oft = oft_micro_config()
    return OpenVLAConfig(
        oft.dino,
        oft.siglip,
        hidden=oft.hidden,
        layers=oft.layers,
        heads=oft.heads,
        kv_heads=oft.kv_heads,
        mlp=oft.mlp,
        vocab=320,
        pad_token_id=256,
        name="openvla-micro",
    )


def write_all(root: Path | None = None, seed: int = 0) -> list[Path]:
    """(Re)write test_vector.gguf of lm_head_greedy: hidden states in, logits out."""
    root = Path(root) if root else skills_dir()
    model = OpenVLA(micro_config())
    init_weights(model, seed)
    model.eval()
    gen = torch.Generator().manual_seed(seed)
    x = torch.randn(1, 5, model.cfg.hidden, generator=gen)
    written = []
    for skill, module in SKILL_MODULES.items():
        head = model.get_submodule(module)
        with torch.no_grad():
            y = head(x)
        weights = {tensor("OUTPUT_WEIGHT"): head.weight.detach().float().numpy()}
        meta = runtime_metadata(model.cfg, random_norm_stats(seed, model.cfg.action_dim))
        path = root / skill / "test_vector.gguf"
        write_vector(path, module, type(head).__name__, weights, meta, [x.numpy()], y.numpy(), arch_name=ARCH)
        written.append(path)
    return written
