"""Latency of one control step (2 images + instruction + proprio -> action chunk), native vs PyTorch.

Every configuration runs in its own process so its peak RSS is its own; each reports the median
of `--repeats` steps after `--warmup` steps. Native builds are made as a port makes them (GGUF via
the converter, cpp/ rendered from the skills, compiled in the sandbox) and driven through
omnimodel.runtime; PyTorch runs eager in the given dtype. Ratios are against PyTorch measured in
the same run on the same machine and threads.

  python benchmarks/latency.py --preset openvla-oft-small --native f16,q8_0,q4_k --torch bf16,fp32 --threads 2
  python benchmarks/latency.py --preset openvla-oft --device cuda --native f16,q4_k --torch bf16   # H100
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _observation(seed: int = 0):
    rng = np.random.default_rng(seed)
    images = [rng.integers(0, 256, (224, 224, 3), dtype=np.uint8) for _ in range(2)]
    return images, rng.uniform(-0.5, 0.5, 8).astype(np.float32), "put the black bowl on the plate"


def _time(fn, warmup: int, repeats: int, sync=lambda: None) -> list[float]:
    for _ in range(warmup):
        fn()
    sync()
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        sync()
        out.append((time.perf_counter() - t0) * 1e3)
    return out


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def _source(args):
    from omnimodel.ggufio.convert import load_source

    return load_source(args.checkpoint or args.preset, seed=0)


def run_torch(args, dtype_name: str) -> dict:
    import torch

    from omnimodel.archs.openvla_oft.policy import TorchPolicy
    from omnimodel.models.preprocess import select_stats
    from omnimodel.models.tokenizer import build_char_tokenizer

    torch.set_num_threads(args.threads)
    dtype = {"bf16": torch.bfloat16, "fp32": torch.float32, "fp16": torch.float16}[dtype_name]
    device = torch.device(args.device)
    if args.checkpoint:
        from omnimodel.models import load_policy

        policy = load_policy(args.checkpoint, dtype=dtype)
    else:
        from omnimodel.models.zoo import build_random_model, random_stats

        model = build_random_model(args.preset, 0).to(dtype)
        _, stats = select_stats(random_stats(0), None)
        policy = TorchPolicy(model, build_char_tokenizer(model.cfg.text_vocab), stats)
    policy.model.to(device)
    images, proprio, text = _observation()
    inputs = policy.prepare(images, proprio, text)
    inputs.pixel_values, inputs.input_ids, inputs.proprio = (
        inputs.pixel_values.to(device),
        inputs.input_ids.to(device),
        inputs.proprio.to(device),
    )
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    @torch.no_grad()
    def step():
        policy.model(inputs.pixel_values, inputs.input_ids, inputs.proprio)

    ms = _time(step, args.warmup, args.repeats, sync)
    extra = {"peak_gpu_mb": torch.cuda.max_memory_allocated() / 2**20} if device.type == "cuda" else {}
    return {"config": f"pytorch-{dtype_name}", "median_ms": statistics.median(ms), "all_ms": ms, "peak_rss_mb": _peak_rss_mb(), **extra}


def build_native(args, quant: str, root: Path) -> Path:
    from omnimodel.archs.openvla_oft.metadata import runtime_metadata
    from omnimodel.codegen.build import build_project
    from omnimodel.codegen.render import render_project
    from omnimodel.ggufio.convert import convert
    from omnimodel.models.preprocess import select_stats

    run = root / f"native-{quant.replace(':', '_')}"
    run.mkdir(parents=True, exist_ok=True)
    src = _source(args)
    _, stats = select_stats(src.stats, None)
    method = quant if quant in ("f32", "f16", "bf16", "q8_0") else f"rtn:{quant}"
    convert(src, run / "model.gguf", method, metadata=runtime_metadata(src.config, stats), device=args.device)
    render_project(run)
    build_project(run / "cpp", run / "build", sandbox=args.sandbox, backend=args.backend)
    if not args.checkpoint:
        from omnimodel.models.tokenizer import build_char_tokenizer

        build_char_tokenizer(src.config.text_vocab).save(str(run / "tokenizer.json"))
    return run


def run_native(args, run_dir: str) -> dict:
    from omnimodel import runtime

    params = {"n_threads": args.threads}
    if args.device == "cuda":
        params["n_gpu_layers"] = -1
    policy = runtime.load(run_dir, checkpoint=args.checkpoint, **params)
    images, proprio, text = _observation()
    ms = _time(lambda: policy.predict_action(images, proprio, text), args.warmup, args.repeats)
    return {"config": f"native-{Path(run_dir).name.removeprefix('native-')}", "median_ms": statistics.median(ms), "all_ms": ms,
            "peak_rss_mb": _peak_rss_mb(), "gguf_bytes": (Path(run_dir) / "model.gguf").stat().st_size}


def _child(argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"config": argv[-1], "error": proc.stderr.strip().splitlines()[-1:] if proc.stderr else "no output"}
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="openvla-oft-small")
    ap.add_argument("--checkpoint", default=None)
    ap.add_argument("--native", default="f16,q8_0,q4_k")
    ap.add_argument("--torch", default="bf16,fp32")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--backend", default=None, help="GGML backend of the native build (default: cuda on --device cuda)")
    ap.add_argument("--sandbox", default="auto")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--one", nargs=2, metavar=("KIND", "ARG"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.backend = args.backend or ("cuda" if args.device == "cuda" else "cpu")
    if args.one:
        kind, arg = args.one
        print(json.dumps(run_torch(args, arg) if kind == "torch" else run_native(args, arg)))
        return
    common = ["--preset", args.preset, "--device", args.device, "--threads", str(args.threads),
              "--repeats", str(args.repeats), "--warmup", str(args.warmup), "--sandbox", args.sandbox, "--backend", args.backend]
    if args.checkpoint:
        common += ["--checkpoint", args.checkpoint]
    root = Path(args.workdir or tempfile.mkdtemp(prefix="omni-latency-"))
    rows = [_child([*common, "--one", "torch", d]) for d in filter(None, args.torch.split(","))]
    for q in filter(None, args.native.split(",")):
        t0 = time.perf_counter()
        try:
            run = build_native(args, q, root)
        except Exception as exc:  # a failed build is a row of the table, not the end of the benchmark
            rows.append({"config": f"native-{q}", "error": str(exc).splitlines()[0]})
            continue
        row = _child([*common, "--one", "native", str(run)])
        row["build_s"] = time.perf_counter() - t0
        rows.append(row)
    base = next((r for r in rows if r.get("config") == f"pytorch-{args.torch.split(',')[0]}" and "median_ms" in r), None)
    print(f"\n{args.preset} on {args.device}, {args.threads} threads, median of {args.repeats}")
    print(f"{'config':<22}{'median ms':>12}{'vs ' + (base['config'] if base else '-'):>22}{'peak RSS MB':>14}")
    for r in rows:
        if "median_ms" not in r:
            print(f"{r['config']:<22}  ERROR {r.get('error')}")
            continue
        ratio = f"{base['median_ms'] / r['median_ms']:.2f}x faster" if base else "-"
        print(f"{r['config']:<22}{r['median_ms']:>12.1f}{ratio:>22}{r['peak_rss_mb']:>14.0f}")
    result = {"preset": args.preset, "checkpoint": args.checkpoint, "device": args.device, "threads": args.threads,
              "machine": os.uname().nodename, "rows": rows}
    if args.out:
        Path(args.out).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
