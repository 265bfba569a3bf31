"""This arch's skill test vectors: a micro instance's module weights, inputs and output per skill.

`write_all(root)` (re)writes test_vector.gguf in every skill folder this arch's graph calls;
`python -m omnimodel.codegen.testvectors [SKILLS_DIR]` runs it for every registered arch.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from omnimodel.archs.openvla_oft.metadata import runtime_metadata
from omnimodel.archs.openvla_oft.model import OpenVLAOFT, OpenVLAOFTConfig, TowerConfig, init_weights
from omnimodel.archs.openvla_oft.names import ARCH
from omnimodel.codegen.testvectors import write_vector
from omnimodel.ggufio import convert
from omnimodel.models.zoo import random_stats
from omnimodel.paths import skills_dir

# skill -> (module whose forward is recorded, GGUF name prefixes of the weights it needs)
SKILL_MODULES = {
    "patch_embedding": ("vision_backbone.featurizer.patch_embed", ("v.patch_embd.",)),
    "dinov2_block": ("vision_backbone.featurizer.blocks.0", ("v.blk.0.",)),
    "siglip_block": ("vision_backbone.fused_featurizer.blocks.0", ("v2.blk.0.",)),
    "fused_projector": ("projector", ("mm.",)),
    "proprio_projector": ("proprio_projector", ("proprio.",)),
    "llama_decoder_layer": ("language_model.model.layers.0", ("blk.0.",)),
    "rms_norm_final": ("language_model.model.norm", ("output_norm.",)),
    "mlp_resnet_action_head": ("action_head", ("act.",)),
    "oft_parallel_decoding": ("end_to_end", ("",)),
}


def micro_config() -> OpenVLAOFTConfig:
    """A model of this arch small enough that a whole-model vector is a few hundred KB (28x28 images)."""
    dino = TowerConfig(
        "micro_dino", 16, 2, 2, 32, image=28, n_registers=4, class_token=True, layer_scale=True
    )
    siglip = TowerConfig("micro_siglip", 16, 2, 2, 48, image=28)
    return OpenVLAOFTConfig(
        dino,
        siglip,
        hidden=32,
        layers=2,
        heads=2,
        kv_heads=2,
        mlp=64,
        vocab=64,
        text_vocab=60,
        pad_token_id=60,
        name="openvla-oft-micro",
    )


def micro_model(seed: int = 0) -> OpenVLAOFT:
    """The micro model with deterministic weights."""
    model = OpenVLAOFT(micro_config())
    init_weights(model, seed)
    return model.eval()


def sample(cfg: OpenVLAOFTConfig, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """pixel_values (1, 6n, S, S), input ids (1, T) starting with BOS, normalised proprio (1, P)."""
    gen = torch.Generator().manual_seed(seed)
    s = cfg.dino.image
    px = torch.randn(1, 6 * cfg.num_images, s, s, generator=gen)
    ids = torch.cat(
        [torch.tensor([[cfg.bos_token_id]]), torch.randint(3, cfg.text_vocab, (1, 6), generator=gen)], 1
    )
    proprio = torch.rand(1, cfg.proprio_dim, generator=gen) * 2 - 1
    return px, ids, proprio


def record(
    model: OpenVLAOFT, px, ids, proprio, names: list[str]
) -> dict[str, tuple[np.ndarray, np.ndarray, str]]:
    """First call's input 0 and output of each named module: name -> (in, out, class)."""
    mods = dict(model.named_modules())
    seen: dict[str, tuple[np.ndarray, np.ndarray, str]] = {}
    hooks = []
    for name in names:

        def hook(mod, args, kwargs, out, name=name):
            if name in seen:
                return
            x = args[0] if args else kwargs.get("hidden_states")
            y = out[0] if isinstance(out, tuple) else out
            seen[name] = (x.detach().float().numpy(), y.detach().float().numpy(), type(mod).__name__)

        hooks.append(mods[name].register_forward_hook(hook, with_kwargs=True))
    with torch.no_grad():
        actions = model(px, ids, proprio).actions
    for h in hooks:
        h.remove()
    seen["end_to_end"] = (px.numpy(), actions.float().numpy(), type(model).__name__)
    return seen


def model_tensors(model: OpenVLAOFT) -> dict[str, np.ndarray]:
    """GGUF name -> F32 array, with the converter's naming and transforms."""
    cfg = model.cfg
    steps = convert.default_transforms(cfg)
    out = {}
    for name, w in convert.gguf_tensors(dict(model.state_dict())).items():
        w = convert.apply_transforms(name, w.detach().float(), steps.get(name, []), cfg)
        out[name] = w.numpy()
    return out


def write_all(root: Path | None = None, seed: int = 0) -> list[Path]:
    """(Re)write test_vector.gguf in every skill folder named in SKILL_MODULES."""
    root = Path(root) if root else skills_dir()
    model = micro_model(seed)
    px, ids, proprio = sample(model.cfg, seed)
    rec = record(model, px, ids, proprio, [m for m, _ in SKILL_MODULES.values() if m != "end_to_end"])
    weights = model_tensors(model)
    meta = runtime_metadata(model.cfg, random_stats(seed, model.cfg.action_dim, model.cfg.proprio_dim))
    written = []
    for skill, (module, prefixes) in SKILL_MODULES.items():
        x, y, cls = rec[module]
        inputs = [x, ids.numpy(), proprio.numpy()] if module == "end_to_end" else [x]
        mine = {n: a for n, a in weights.items() if n.startswith(prefixes)}
        path = root / skill / "test_vector.gguf"
        write_vector(path, module, cls, mine, meta, inputs, y, arch_name=ARCH)
        written.append(path)
    return written
