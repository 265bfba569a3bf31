"""GPU machine only (CI has no GPU): the encoders on CUDA give the CPU's error, type by type.

  python benchmarks/quant_cuda_parity.py
"""

from __future__ import annotations

import torch

from omnimodel.quant.decoders import decode
from omnimodel.quant.encoders import encode
from omnimodel.quant.formats import FORMATS


def main() -> None:
    assert torch.cuda.is_available(), "run this on the GPU machine"
    gen = torch.Generator().manual_seed(10)
    w = torch.randn(64, 1024, generator=gen)
    print(f"{'type':<8}{'cpu mse':>12}{'cuda mse':>12}{'bytes equal':>13}")
    for qtype, fmt in FORMATS.items():
        if fmt.block_size == 1:
            continue
        try:
            b_cpu = encode(w, qtype)
        except Exception:  # types without an encoder (the lattice family)
            continue
        b_gpu = encode(w.cuda(), qtype).cpu()
        e_cpu = (decode(b_cpu, qtype, tuple(w.shape)) - w).pow(2).mean().item()
        e_gpu = (decode(b_gpu, qtype, tuple(w.shape)) - w).pow(2).mean().item()
        print(f"{qtype:<8}{e_cpu:>12.3e}{e_gpu:>12.3e}{str(torch.equal(b_cpu, b_gpu)):>13}")


if __name__ == "__main__":
    main()
