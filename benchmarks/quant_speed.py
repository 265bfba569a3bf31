"""Encoder throughput (parameters/s) against GGML's `ggml_quantize_chunk` on the same machine and threads.

    python benchmarks/quant_speed.py                       # CPU, 4096x4096 and 11008x4096
    python benchmarks/quant_speed.py --types Q4_K --threads 2
    python benchmarks/quant_speed.py --device cuda --llama7b   # CUDA time for a 7B-shaped set of matrices
    python benchmarks/quant_speed.py --quality              # RMSE ratio ours/GGML, Gaussian and Student-t(3)

GGML's quantizer is single-threaded per call; it is run on `--threads` row slices in parallel
(ctypes releases the GIL), as llama-quantize does. Torch uses `--threads` intra-op threads.
"""

from __future__ import annotations

import argparse
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from omnimodel.quant import decode, encode, ggml_ref

DEFAULT_TYPES = ["Q8_0", "Q6_K", "Q5_K", "Q4_K", "Q3_K", "Q2_K", "IQ4_NL", "IQ4_XS"]


def _matrix(dist: str, rows: int, cols: int, seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    n = torch.randn(rows, cols, generator=g)
    if dist == "gauss":
        return n
    chi2 = torch.randn(rows, cols, 3, generator=g).pow(2).sum(-1)
    return n / (chi2 / 3).sqrt()


def ggml_quantize_threads(lib, w: np.ndarray, qtype: str, threads: int) -> np.ndarray:
    """ggml_quantize_chunk over `threads` row slices in parallel."""
    parts = np.array_split(np.arange(w.shape[0]), threads)
    with ThreadPoolExecutor(threads) as pool:
        outs = list(pool.map(lambda idx: ggml_ref.quantize(lib, w[idx[0] : idx[-1] + 1], qtype), parts))
    return np.concatenate(outs, axis=0)


def _timed(fn, repeat: int = 1) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def speed_table(lib, types, shapes, threads, device) -> None:
    """Print params/s of ours and GGML's quantizer per type and shape, and the ratio."""
    print(f"{'type':8} {'shape':>11} {'ours Mp/s':>10} {'ggml Mp/s':>10} {'ratio':>6}")
    for rows, cols in shapes:
        w = _matrix("gauss", rows, cols)
        wd = w.to(device)
        for t in types:
            if device == "cuda":
                torch.cuda.synchronize()
            t_ours = _timed(lambda wd=wd, t=t: (encode(wd, t), torch.cuda.synchronize() if device == "cuda" else None))
            t_ref = _timed(lambda w=w, t=t: ggml_quantize_threads(lib, w.numpy(), t, threads)) if lib else float("nan")
            n = rows * cols / 1e6
            print(f"{t:8} {rows:>5}x{cols:<5} {n / t_ours:10.2f} {n / t_ref:10.2f} {t_ref / t_ours:6.2f}")


def quality_table(lib, types, rows, cols) -> None:
    """Print relative RMSE of ours and GGML's (no imatrix; lattice types: an imatrix of ones) and the ratio."""
    print(f"{'type':8} {'dist':6} {'ours':>8} {'ggml':>8} {'ratio':>6}")
    for dist in ("gauss", "t3"):
        w = _matrix(dist, rows, cols, seed=1)
        norm = float(w.pow(2).mean().sqrt())
        for t in types:
            y = decode(encode(w, t), t, (rows, cols)).numpy()
            # GGML quantizes the IQ2/IQ3 lattice types only with an imatrix: give it one of ones (no preference)
            imat = np.ones(cols, np.float32) if t.startswith(("IQ2", "IQ3", "IQ1")) else None
            yr = ggml_ref.dequantize(lib, ggml_ref.quantize(lib, w.numpy(), t, imat), t, rows * cols).reshape(rows, cols)
            e = float(np.sqrt(np.mean((y - w.numpy()) ** 2))) / norm
            er = float(np.sqrt(np.mean((yr - w.numpy()) ** 2))) / norm
            print(f"{t:8} {dist:6} {e:8.5f} {er:8.5f} {e / er:6.4f}")


def llama7b_time(types, device) -> None:
    """Time to encode every quantizable matrix of a LLaMA-7B-shaped trunk (32 layers)."""
    h, f, layers, vocab = 4096, 11008, 32, 32064
    shapes = [(h, h)] * 4 + [(f, h)] * 2 + [(h, f)]
    n_params = layers * sum(r * c for r, c in shapes) + 2 * vocab * h
    mats = {s: _matrix("gauss", *s).to(device) for s in set(shapes) | {(vocab, h)}}
    for t in types:
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        for _ in range(layers):
            for s in shapes:
                encode(mats[s], t)
        for _ in range(2):
            encode(mats[(vocab, h)], t)
        if device == "cuda":
            torch.cuda.synchronize()
        dt = time.perf_counter() - t0
        print(f"{t:8} 7B-shaped ({n_params / 1e9:.2f} B params) on {device}: {dt:7.1f} s  {n_params / dt / 1e6:8.1f} Mp/s")


def main() -> None:
    """Parse arguments and print the requested tables."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--types", default=",".join(DEFAULT_TYPES))
    ap.add_argument("--threads", type=int, default=torch.get_num_threads())
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--shapes", default="4096x4096,11008x4096")
    ap.add_argument("--llama7b", action="store_true")
    ap.add_argument("--quality", action="store_true")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    types = [t.strip().upper() for t in args.types.split(",")]
    lib_dir = ggml_ref.find_lib_dir(build=False)
    lib = ggml_ref.load(str(lib_dir)) if lib_dir else None
    print(f"device={args.device} threads={args.threads} ggml={'yes' if lib else 'not found'}")
    if args.llama7b:
        llama7b_time(types, args.device)
        return
    if args.quality:
        if lib is None:
            raise SystemExit("quality needs a GGML build (omnimodel toolchain build)")
        rows, cols = (int(x) for x in args.shapes.split(",")[0].split("x"))
        quality_table(lib, types, rows, cols)
        return
    shapes = [tuple(int(x) for x in s.split("x")) for s in args.shapes.split(",")]
    speed_table(lib, types, shapes, args.threads, args.device)


if __name__ == "__main__":
    main()
