"""The paper's Table 2: per-token latency of OpenVLA 7B — prompt pass, each decode step, the 7-token action.

Rows measured in one run on one machine: PyTorch bf16 (SDPA attention; eager, and torch.compile of
the trunk where it works) and the native build at F16, Q8_0 and Q4_K_M, with every layer on the
GPU and with half of the LLaMA layers on the CPU (the paper's split). Random weights of the real
sizes (the `openvla` preset, 7.54B parameters): latency does not depend on the values. The same
sequence on both sides: one 224x224 image (256 patches) and a 34-token prompt, 7 greedy tokens
(one prompt pass, then 6 cached decode steps). Median of --repeats after --warmup.

  python benchmarks/openvla_table2.py --native f16,q8_0,q4_k_m --out benchmarks/results/openvla_table2_h200.json   # GPU machine
  python benchmarks/openvla_table2.py --preset openvla-tiny --device cpu --native f32 --splits all   # a smoke run here
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROMPT_IDS = [1, *range(3, 36)]  # BOS + 33 ids: the synthetic step policy_cli bench runs


def _median(xs):
    return statistics.median(xs) if xs else None


def run_torch(args, compiled: bool) -> dict:
    import torch
    from transformers import DynamicCache

    from omnimodel.archs.openvla.model import OpenVLA, preset

    cfg = preset(args.preset)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    torch.manual_seed(0)
    with torch.device(device):
        model = OpenVLA(cfg).to(dtype).eval()
    lm = model.language_model
    lm.config._attn_implementation = "sdpa"
    step_lm = torch.compile(lm, dynamic=True) if compiled else lm
    s = cfg.dino.image
    px = torch.randn(1, 6, s, s, device=device, dtype=dtype)
    ids = torch.tensor([PROMPT_IDS], device=device)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    @torch.no_grad()
    def action():
        times = []
        cache = DynamicCache()
        t0 = time.perf_counter()
        x = model.multimodal_embeddings(px, ids)
        logits = step_lm(inputs_embeds=x, past_key_values=cache, use_cache=True).logits
        tok = logits[:, -1].argmax(-1, keepdim=True)
        sync()
        times.append((time.perf_counter() - t0) * 1e3)
        for _ in range(cfg.action_dim - 1):
            t0 = time.perf_counter()
            logits = step_lm(input_ids=tok, past_key_values=cache, use_cache=True).logits
            tok = logits[:, -1].argmax(-1, keepdim=True)
            sync()
            times.append((time.perf_counter() - t0) * 1e3)
        return times

    for _ in range(args.warmup):
        action()
    runs = [action() for _ in range(args.repeats)]
    prompt = [r[0] for r in runs]
    decode = [d for r in runs for d in r[1:]]
    total = [sum(r) for r in runs]
    row = {
        "config": f"pytorch-{'bf16' if dtype == torch.bfloat16 else 'fp32'}-sdpa{'-compile' if compiled else ''}",
        "prompt_ms": _median(prompt),
        "decode_ms": _median(decode),
        "action_ms": _median(total),
        "seq_len": int(ids.shape[1]) + cfg.n_patch_tokens,
    }
    if device.type == "cuda":
        row["peak_gpu_mb"] = torch.cuda.max_memory_allocated() / 2**20
    return row


_SOURCE = {}


def build_native(args, quant: str, root: Path) -> Path:
    from omnimodel import archs
    from omnimodel.codegen.build import build_project
    from omnimodel.codegen.render import choose_skills, render_project
    from omnimodel.ggufio.convert import convert, load_source

    arch = archs.get("openvla")
    run = root / f"native-{quant.replace(':', '_')}"
    run.mkdir(parents=True, exist_ok=True)
    if "src" not in _SOURCE:  # one random 7B model for every budget: its init costs more than a conversion
        _SOURCE["src"] = load_source(args.preset, seed=0)
    src = _SOURCE["src"]
    stats = next(iter(src.stats.values())) if src.stats and "action" not in src.stats else src.stats
    convert(
        src, run / "model.gguf", quant, metadata=arch.runtime_metadata(src.config, stats), device=args.device
    )
    render_project(run, choose_skills(arch.graph_skills()), arch)
    build_project(run / "cpp", run / "build", sandbox=args.sandbox, backend=args.backend)
    return run


def run_native(args, run: Path, ngl: int) -> dict:
    cli = run / "build" / "policy_cli"
    cmd = [
        str(cli),
        "bench",
        str(run / "model.gguf"),
        "-n",
        str(args.repeats),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
        "--ngl",
        str(ngl),
    ]
    if args.flash_attn is not None:
        cmd += ["--flash-attn", str(args.flash_attn)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=1800)
    lines = [json.loads(ln) for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines or lines[-1].get("status") != "ok":
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    res = lines[-1]
    stages = res.get("stages", [])
    prompt = [s["median_ms"] for s in stages if s["stage"] == "prompt"]
    decode = [s["median_ms"] for s in stages if s["stage"] == "decode"]
    return {
        "prompt_ms": prompt[0] if prompt else None,
        "decode_ms": _median(decode),
        "n_decode": len(decode),
        "action_ms": res["median_ms"],
        "gguf_bytes": (run / "model.gguf").stat().st_size,
    }


def _child(argv: list[str]) -> dict:
    proc = subprocess.run([sys.executable, __file__, *argv], capture_output=True, text=True)
    lines = [ln for ln in proc.stdout.splitlines() if ln.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {"error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--preset", default="openvla")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--backend", default=None, help="GGML backend (default: cuda on --device cuda)")
    ap.add_argument("--native", default="f16,q8_0,q4_k_m")
    ap.add_argument("--torch", default="eager,compile")
    ap.add_argument(
        "--splits",
        default="all,half",
        help="all: every layer on the GPU; half: half the LLaMA layers on the CPU",
    )
    ap.add_argument("--sandbox", default="auto")
    ap.add_argument(
        "--flash-attn",
        type=int,
        choices=(0, 1),
        default=None,
        help="policy_cli's --flash-attn (default: on with a GPU)",
    )
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--one-torch", choices=["eager", "compile"], help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.backend = args.backend or ("cuda" if args.device == "cuda" else "cpu")
    if args.one_torch:
        print(json.dumps(run_torch(args, args.one_torch == "compile")))
        return
    from omnimodel.archs.openvla.model import preset

    n_layer = preset(args.preset).layers
    common = [
        "--preset",
        args.preset,
        "--device",
        args.device,
        "--repeats",
        str(args.repeats),
        "--warmup",
        str(args.warmup),
        "--threads",
        str(args.threads),
    ]
    rows = []
    for mode in filter(None, args.torch.split(",")):
        row = _child([*common, "--one-torch", mode])
        row.setdefault("config", f"pytorch-sdpa-{mode}")
        rows.append(row)
        print(json.dumps(row), flush=True)
    root = Path(args.workdir or tempfile.mkdtemp(prefix="omni-table2-"))
    for q in filter(None, args.native.split(",")):
        t0 = time.perf_counter()
        try:
            run = build_native(args, q, root)
        except Exception as exc:  # a failed build is a row of the table, not the end of the benchmark
            rows.append({"config": f"native-{q}", "error": str(exc).splitlines()[0]})
            continue
        build_s = time.perf_counter() - t0
        for split in filter(None, args.splits.split(",")):
            ngl = -1 if split == "all" else n_layer // 2
            if args.device != "cuda":
                ngl = 0
            row = {
                "config": f"native-{q}-{split}",
                "n_gpu_layers": ngl,
                "build_s": build_s,
                **run_native(args, run, ngl),
            }
            rows.append(row)
            print(json.dumps(row), flush=True)
            _write(args, rows)  # a row at a time: a run cut short still leaves what it measured
            if args.device != "cuda":
                break
        (run / "model.gguf").unlink()  # 15 GB at F16: keep the disk for the next budget
    base = next((r for r in rows if r.get("config", "").startswith("pytorch") and r.get("action_ms")), None)
    print(f"\n{args.preset} on {args.device}: ms (median of {args.repeats})")
    print(
        f"{'config':<28}{'prompt':>10}{'decode':>10}{'7-token action':>16}{'vs ' + (base['config'] if base else '-'):>34}"
    )
    for r in rows:
        if not r.get("action_ms"):
            print(f"{r.get('config'):<28}  ERROR {r.get('error')}")
            continue
        ratio = f"{base['action_ms'] / r['action_ms']:.2f}x" if base else "-"
        print(
            f"{r['config']:<28}{r['prompt_ms'] or 0:>10.1f}{r['decode_ms'] or 0:>10.2f}{r['action_ms']:>16.1f}{ratio:>34}"
        )
    _write(args, rows)


def _write(args, rows: list[dict]) -> None:
    if args.out:
        Path(args.out).write_text(
            json.dumps(
                {
                    "preset": args.preset,
                    "device": args.device,
                    "machine": os.uname().nodename,
                    "prompt_ids": len(PROMPT_IDS),
                    "rows": rows,
                },
                indent=2,
            )
        )


if __name__ == "__main__":
    main()
