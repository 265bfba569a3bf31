"""Oracle check (GPU machine, where timm is installed): our vision towers vs timm's own models.

Builds timm's `vit_large_patch14_reg4_dinov2.lvd142m` and `vit_so400m_patch14_siglip_224` with
random weights (pretrained=False, num_classes=0, img_size=224 as Prismatic does), loads the same
weights into our towers (timm's `gamma` renamed to the release's `scale_factor`), and compares
our forward with timm's `get_intermediate_layers(n={depth - 2})` (what Prismatic's featurizer
returns). Usage: python benchmarks/oracle_timm_towers.py [--out results.json]
"""

from __future__ import annotations

import argparse
import json

import torch

from omnimodel.archs.openvla_oft.model import DINOV2_L_REG4, SIGLIP_SO400M, TowerConfig, VisionTransformer


def compare_tower(cfg: TowerConfig, device: str, seed: int) -> dict:
    import timm

    torch.manual_seed(seed)
    ref = timm.create_model(cfg.timm_id, pretrained=False, num_classes=0, img_size=224).to(device).eval()
    with torch.no_grad():  # LayerScale is 1e-5 at init: randomise so it matters
        for name, p in ref.named_parameters():
            if name.endswith("gamma") or "norm" in name:
                p.copy_(torch.randn_like(p) * 0.1 + (1.0 if name.endswith("weight") else 0.0))
    ours = VisionTransformer(cfg).to(device).eval()
    state = {k.replace(".gamma", ".scale_factor"): v for k, v in ref.state_dict().items()}
    missing, unexpected = ours.load_state_dict(state, strict=False)
    x = torch.randn(2, 3, 224, 224, device=device)
    with torch.no_grad():
        want = ref.get_intermediate_layers(x, n={len(ref.blocks) - 2})[0]
        got = ours(x)
    diff = (got - want).abs().max().item()
    cos = torch.nn.functional.cosine_similarity(got.flatten(), want.flatten(), dim=0).item()
    return {
        "timm_id": cfg.timm_id,
        "timm_version": timm.__version__,
        "shape_ours": list(got.shape),
        "shape_timm": list(want.shape),
        "max_abs_diff": diff,
        "cosine": cos,
        "missing_keys": list(missing),
        "unexpected_keys": list(unexpected),
        "param_count_timm": sum(p.numel() for p in ref.parameters()),
        "param_count_ours": sum(p.numel() for p in ours.parameters()),
    }


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default=None)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.backends.cudnn.allow_tf32 = False
    results = [compare_tower(cfg, args.device, seed) for seed, cfg in enumerate((DINOV2_L_REG4, SIGLIP_SO400M))]
    text = json.dumps(results, indent=2)
    print(text)
    if args.out:
        with open(args.out, "w") as f:
            f.write(text)


if __name__ == "__main__":
    main()
