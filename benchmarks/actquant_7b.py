"""ActQuant's full pass (HSIC allocation + AMF Fisher + scale alternation) on the 7B preset with random
weights in the real layout and random calibration frames; prints time per stage and peak GPU memory.

Run on the GPU box (needs torch, transformers, numpy and the pure-Python `gguf` package; rich is
optional):  PYTHONPATH=. python benchmarks/actquant_7b.py --frames 256 --bpw 3.5
The model is built in bf16 directly on the GPU; the GGUF tensors are produced lazily one at a
time from the model's parameters (no converter, no file written), exactly as the converter would
lay them out (q/k RoPE permutation, qkv split). `--preset openvla-oft-small` for a quick check.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


class LazyGGUFTensors(Mapping):
    """GGUF name -> GGUF-layout weight, computed from the model's parameter on access (bf16, on its device)."""

    def __init__(self, model, cfg):
        from omnimodel.ggufio import names
        from omnimodel.ggufio.convert import default_transforms

        self.cfg = cfg
        self.steps = default_transforms(cfg)
        self.src: dict[str, tuple[torch.nn.Parameter, int, int]] = {}
        for key, p in model.named_parameters():
            if ".attn_pool." in key:
                continue
            try:
                targets = names.gguf_names(key)
            except KeyError:
                continue
            n = p.shape[0] // len(targets)
            for k, g in enumerate(targets):
                shape = (n, *p.shape[1:])
                if names.is_quantizable(g, shape):
                    self.src[g] = (p, k * n, n)

    def __getitem__(self, name: str) -> torch.Tensor:
        from omnimodel.ggufio.convert import apply_transforms

        p, r0, n = self.src[name]
        return apply_transforms(name, p.detach()[r0 : r0 + n], self.steps.get(name, []), self.cfg)

    def __iter__(self) -> Iterator[str]:
        return iter(self.src)

    def __len__(self) -> int:
        return len(self.src)


def build_model(preset: str, device: torch.device):
    """The preset's OpenVLA-OFT in bf16 on `device`, random weights (default module init)."""
    from omnimodel.archs.openvla_oft.model import OpenVLAOFT
    from omnimodel.archs.openvla_oft.model import preset as get_preset

    cfg = get_preset(preset)
    old = torch.get_default_dtype()
    torch.set_default_dtype(torch.bfloat16)
    try:
        with torch.device(device):
            model = OpenVLAOFT(cfg)
    finally:
        torch.set_default_dtype(old)
    return model.eval(), cfg


def _on(scales, device):
    """Fixed block scales moved to `device` (a dataclass of tensors, or None)."""
    import dataclasses

    if scales is None:
        return None
    return dataclasses.replace(scales, **{f.name: getattr(scales, f.name).to(device) for f in dataclasses.fields(scales)
                                          if isinstance(getattr(scales, f.name), torch.Tensor)})  # fmt: skip


def main() -> None:
    """Time each stage of actquant on random weights and frames; print a table and JSON."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", default="openvla-oft")
    ap.add_argument("--frames", type=int, default=256, help="calibration frames (the paper uses all frames of 60 episodes)")
    ap.add_argument("--bpw", type=float, default=3.5, help="7B floor with our encoders is ~3.08 (SigLIP rows fit no K-quant)")
    ap.add_argument("--fisher-gb", type=float, default=16.0, help="cap of the float32 Fisher accumulators per pass")
    ap.add_argument("--objective", default="amf")
    ap.add_argument("--out", type=Path, default=None, help="write the JSON result here")
    args = ap.parse_args()
    import logging

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    from actquant_plugin.calibration import random_set
    from actquant_plugin.plugin import ActQuant, ActQuantOptions
    from omnimodel.quant.plugin import QuantContext

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    t0 = time.perf_counter()
    model, cfg = build_model(args.preset, device)
    t_build = time.perf_counter() - t0
    model_gb = sum(p.numel() * p.element_size() for p in model.parameters()) / 1e9
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    calib = random_set(cfg, args.frames, seed=0)
    tensors = LazyGGUFTensors(model, cfg)
    opts = ActQuantOptions(bpw=args.bpw, objective=args.objective, fisher_gb=args.fisher_gb, device=str(device),
                           check_layout=False)  # fmt: skip
    q = ActQuant(opts)
    t0 = time.perf_counter()
    plans = q.plan(tensors, QuantContext(config=cfg, model=model, calibration=calib, budget_bpw=args.bpw))
    plan_s = time.perf_counter() - t0
    logging.info("plan done in %.1f s; encoding %d tensors", plan_s, len(plans))
    from omnimodel.quant.encoders import encode

    t1 = time.perf_counter()
    n_bytes = 0
    for name, p in plans.items():  # the bytes the converter would write, on the same device
        if p.ggml_type in ("F32", "F16", "BF16"):
            continue
        imp = p.importance.to(device) if p.importance is not None else None
        n_bytes += encode(tensors[name].float(), p.ggml_type, importance=imp, scales=_on(p.scales, device), name=name).numel()
    if device.type == "cuda":
        torch.cuda.synchronize()
    encode_s = time.perf_counter() - t1
    total = time.perf_counter() - t0
    peak = torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else float("nan")
    rep = q.report
    types: dict[str, int] = {}
    for p in plans.values():
        types[p.ggml_type] = types.get(p.ggml_type, 0) + 1
    result = {
        "preset": args.preset,
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "frames": args.frames,
        "budget_bpw": args.bpw,
        "planned_bpw": rep.planned_bpw,
        "matrices": len(plans),
        "types": types,
        "model_build_s": t_build,
        "model_gb": model_gb,
        "timings_s": rep.timings | {"encode": encode_s},
        "encoded_bytes": n_bytes,
        "total_s": total,
        "peak_gpu_gb": peak,
    }
    print(f"{'stage':<14}{'seconds':>10}")
    for k, v in (rep.timings | {"encode": encode_s}).items():
        print(f"{k:<14}{v:>10.1f}")
    print(f"{'total':<14}{total:>10.1f}")
    print(f"peak GPU memory {peak:.1f} GB (model {model_gb:.1f} GB), planned {rep.planned_bpw:.3f} bpw, types {types}")
    print(json.dumps(result))
    if args.out:
        args.out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
