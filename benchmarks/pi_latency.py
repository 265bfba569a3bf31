"""Control-step latency of π0.5 / π0: prefix pass + 10 Euler denoise steps -> one action chunk.

Rows measured in one run on one machine: PyTorch (our reference model, omnimodel/archs/pi0/model.py,
bf16 on CUDA / fp32 on CPU, its attention swapped for F.scaled_dot_product_attention the way HF's
`sdpa` does it: K/V repeated to the query heads, the boolean prefix-LM mask passed as attn_mask;
SigLIP's unmasked attention through SDPA too) eager and with torch.compile of the whole prefix
pass and of one whole denoise step (`compile`; `compile-regional` compiles per layer, faster to
compile; `compile-ro` is `compile` with mode=reduce-overhead, CUDA graphs; a failed compile, or one
past --compile-timeout, is an error row), then the native build at each --native type (CUDA
backend, every layer on the GPU: --ngl -1). Each PyTorch row runs in its own process; so does the
conversion of all native GGUFs (the GPU is free again before the native rows; the project compiles
meanwhile), and each native row is `policy_cli bench` of one project rendered and built once for the
arch (the graph reads the tensor types from the GGUF, so one binary serves every type). Each GGUF is
deleted after its row. llama.cpp mixes (q4_k_m, q3_k_m) are planned by actquant_plugin's mix_types
with π0's heads (quantizer_for); rtn:q4_k / rtn:q3_k are the uniform alternatives.

Weights: random, of the real sizes (`pi05` 3.35B / `pi0` 3.24B presets; latency does not depend
on the values), drawn directly on --device in the run dtype (bf16 on CUDA, fp32 on CPU) with the
scale rules of archs/pi0/zoo.init_weights: the model is built on the meta device, materialised
with to_empty and filled in place by normal_ with a device generator. zoo.build_random_model (what
load_source / the arch's random_model use) draws every tensor in fp32 on the CPU with one
generator, which for 3.35B costs minutes of the GPU machine's budget; the same seed gives the
same weights to the PyTorch rows and to the converter child (same device, same dtype). The
converter encodes with --device (CUDA encoders for the K-quants).

Inputs, the same on both sides: 3 cameras of 224x224 uint8 (seed 0), all valid; a prompt of the
preset's max_token_len ids (BOS + ids >= 4, no padding: prefix 968 tokens for π0.5, 816 for π0);
π0's raw state (8 values; π0.5 has none); noise = the native runtime's first draw
(archs/pi0/noise.flow_noise(0, 0)) for PyTorch, the runtime's own deterministic draw natively.
The native step includes uint8 -> [-1, 1], state/action (un)normalisation and the host copies;
the PyTorch step is sample_actions on inputs already on the device.

Per stage: PyTorch times the prefix pass (SigLIP + projector + PaliGemma K/V) and each denoise
step with CUDA events (perf_counter on CPU); natively policy_cli bench reports the medians of its
graph runs, `prefix` (vision + LLM prefix in one graph) and 10 x `denoise`. Total = wall time of
the step. Peak GPU memory: torch.cuda.max_memory_allocated (and _reserved) for PyTorch;
for every row also the peak of nvidia-smi's memory.used for the device minus its value just before
the row's process started (polled every 0.1 s; includes the CUDA context, ~0.5 GB), and the
per-process used_memory when nvidia-smi lists the pid. Median of --repeats after --warmup.

  # GPU machine (one H100/H200; GGML CUDA build cached under ~/.cache/omnimodel), ~4-6 min each:
  python benchmarks/pi_latency.py --arch pi05 --native f16,q4_k_m,q3_k_m --out benchmarks/results/pi05_latency_h100.json
  python benchmarks/pi_latency.py --arch pi0 --native f16,q4_k_m,q3_k_m --out benchmarks/results/pi0_latency_h100.json
  # smoke run here (tiny preset, CPU):
  python benchmarks/pi_latency.py --preset pi05-tiny --device cpu --native f32 --torch eager --repeats 2 --warmup 1
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SEED = 0
STATE_DIM = 8  # LIBERO's raw state (archs/pi0/zoo.ROBOT_STATE_DIM): π0's state token


def _median(xs):
    return statistics.median(xs) if xs else None


# ----------------------------------------------------------------------------- weights and inputs


def random_pi(preset_name: str, device: str, dtype, seed: int = SEED):
    """The preset with random weights drawn on `device` in `dtype` (zoo.init_weights' scale rules)."""
    import math

    import torch
    from torch import nn

    from omnimodel.archs.pi0.model import PI0, AdaRMSNorm, RMSNorm, preset

    cfg = preset(preset_name)
    with torch.device("meta"):
        model = PI0(cfg).to(dtype)
    model = model.to_empty(device=device)
    gen = torch.Generator(device=device).manual_seed(seed)
    kinds = {name: type(m) for name, m in model.named_modules()}
    with torch.no_grad():
        for name, p in model.named_parameters():
            owner, _, pname = name.rpartition(".")
            kind, parent = kinds[owner], kinds.get(owner.rpartition(".")[0])
            if kind is nn.LayerNorm:
                mean, std = (1.0 if pname == "weight" else 0.0), 0.05
            elif kind is RMSNorm:
                mean, std = 0.0, 0.1
            elif parent is AdaRMSNorm:
                mean, std = 0.0, 0.1 / (math.sqrt(p.shape[1]) if p.dim() > 1 else 1.0)
            elif pname == "bias":
                mean, std = 0.0, 0.02
            elif kind is nn.Embedding:
                mean, std = 0.0, 1.0 / math.sqrt(p.shape[1])
            else:
                mean, std = 0.0, 1.0 / math.sqrt(p[0].numel())
            p.normal_(mean, std, generator=gen)
    return model.eval()


def observation(cfg) -> tuple[np.ndarray, list[int], np.ndarray]:
    """(cameras x S x S x 3 uint8, max_token_len prompt ids starting with BOS, raw state (8,))."""
    rng = np.random.default_rng(SEED)
    s = cfg.vision.image
    images = rng.integers(0, 256, (cfg.num_cameras, s, s, 3), dtype=np.uint8)
    bos = 2  # PaliGemma <bos> (archs/pi0/tokenizer.py); ids 0..3 are the specials
    ids = [bos] + [4 + (i * 37) % (cfg.vocab - 4) for i in range(cfg.max_token_len - 1)]
    state = rng.uniform(-0.5, 0.5, STATE_DIM).astype(np.float32)
    return images, ids, state


def write_inputs(path: Path, cfg) -> None:
    """policy_cli's --inputs GGUF: `images` (n x S x S x 3, 0..255), `token_ids` (I32), `proprio` (π0 only)."""
    import gguf

    images, ids, state = observation(cfg)
    w = gguf.GGUFWriter(str(path), arch="omnimodel-inputs")
    w.add_tensor("images", images.astype(np.float32))
    w.add_tensor("token_ids", np.asarray(ids, dtype=np.int32))
    if not cfg.pi05:
        w.add_tensor("proprio", state)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


# ----------------------------------------------------------------------------- PyTorch rows (child processes)


def _use_sdpa() -> None:
    """Swap the reference model's eager attentions for SDPA (HF's sdpa path: repeat_kv, boolean mask)."""
    import torch.nn.functional as F

    from omnimodel.archs.pi0 import model as M

    def attention(q, k, v, mask, scale):
        groups = q.shape[1] // k.shape[1]
        if groups > 1:
            k, v = k.repeat_interleave(groups, dim=1), v.repeat_interleave(groups, dim=1)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask[:, None], scale=scale)

    def siglip_forward(self, x):
        b, s, d = x.shape
        hd = d // self.heads

        def split(t):
            return t.view(b, s, self.heads, hd).transpose(1, 2)

        out = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)))
        return self.out_proj(out.transpose(1, 2).reshape(b, s, d))

    M.attention = attention  # joint_layer looks the name up at call time
    M.SiglipAttention.forward = siglip_forward


def run_torch(args, mode: str) -> dict:
    import torch

    from omnimodel.archs.pi0.model import LayerKV, PrefixCache, preset
    from omnimodel.archs.pi0.noise import flow_noise

    torch.set_num_threads(args.threads)
    cfg = preset(args.preset)
    device = torch.device(args.device)
    cuda = device.type == "cuda"
    dtype = torch.bfloat16 if cuda else torch.float32
    t0 = time.perf_counter()
    model = random_pi(args.preset, args.device, dtype)
    init_s = time.perf_counter() - t0
    images, ids, state = observation(cfg)
    px = torch.from_numpy(images).to(device).permute(0, 3, 1, 2).float() / 255.0 * 2.0 - 1.0
    cams = [px[i : i + 1].to(dtype) for i in range(cfg.num_cameras)]
    masks = [torch.ones(1, dtype=torch.bool, device=device) for _ in cams]
    tokens = torch.tensor([ids], device=device)
    token_mask = torch.ones_like(tokens, dtype=torch.bool)
    st = None
    if not cfg.pi05:  # normalised, zero-padded state (values do not matter for latency)
        st = torch.zeros(1, cfg.state_dim, device=device)
        st[0, :STATE_DIM] = torch.from_numpy(state).to(device)
    noise = torch.from_numpy(flow_noise(0, 0, (cfg.chunk, cfg.action_dim)))[None].to(device)
    with torch.no_grad():
        reference = model.sample_actions(cams, masks, tokens, token_mask, st, noise.clone())  # eager attention

    _use_sdpa()

    def prefix_kv(cams, masks, tokens, token_mask):
        c = model.prefix_pass(cams, masks, tokens, token_mask)
        return tuple(kv.k for kv in c.kv), tuple(kv.v for kv in c.kv), c.pad_mask

    def velocity(ks, vs, pad, st, x, t):
        return model.denoise_step(PrefixCache([LayerKV(k, v) for k, v in zip(ks, vs, strict=True)], pad), st, x, t)

    if mode in ("compile", "compile-ro"):  # the whole prefix pass and one whole denoise step
        opts = {"mode": "reduce-overhead"} if mode == "compile-ro" else {}
        prefix_kv, velocity = torch.compile(prefix_kv, **opts), torch.compile(velocity, **opts)
    elif mode == "compile-regional":  # one layer at a time: compiled once, reused by the identical layers
        from omnimodel.archs.pi0 import model as M

        torch._dynamo.config.cache_size_limit = max(64, torch._dynamo.config.cache_size_limit)
        M.joint_layer = torch.compile(M.joint_layer)  # run_layers looks the name up at call time
        for layer in model.paligemma_with_expert.paligemma.model.vision_tower.vision_model.encoder.layers:
            layer.compile()
    elif mode != "eager":
        raise SystemExit(f"unknown torch mode {mode!r}: eager, compile, compile-regional or compile-ro")
    sync = torch.cuda.synchronize if cuda else (lambda: None)

    def mark():
        if cuda:
            e = torch.cuda.Event(enable_timing=True)
            e.record()
            return e
        return time.perf_counter()

    def between(a, b) -> float:
        return a.elapsed_time(b) if cuda else (b - a) * 1e3

    @torch.no_grad()
    def step():
        if mode == "compile-ro":
            torch.compiler.cudagraph_mark_step_begin()
        sync()
        w0 = time.perf_counter()
        marks = [mark()]
        ks, vs, pad = prefix_kv(cams, masks, tokens, token_mask)
        marks.append(mark())
        x, dt = noise, -1.0 / cfg.num_steps
        for s in range(cfg.num_steps):
            t = torch.full((1,), 1.0 + s * dt, dtype=torch.float32, device=device)
            x = x + dt * velocity(ks, vs, pad, st, x, t)
            marks.append(mark())
        sync()
        total = (time.perf_counter() - w0) * 1e3
        return total, [between(a, b) for a, b in zip(marks, marks[1:], strict=False)], x

    t0 = time.perf_counter()
    _, _, first = step()
    first_s = time.perf_counter() - t0  # includes the compile in compile mode
    for _ in range(max(0, args.warmup - 1)):
        step()
    runs = [step() for _ in range(args.repeats)]
    denoise = [sum(r[1][1:]) for r in runs]
    row = {
        "config": f"pytorch-{'bf16' if cuda else 'fp32'}-sdpa-{mode}",
        "step_ms": _median([r[0] for r in runs]),
        "prefix_ms": _median([r[1][0] for r in runs]),
        "denoise_ms": _median(denoise),
        "denoise_step_ms": _median([d for r in runs for d in r[1][1:]]),
        "all_step_ms": [round(r[0], 3) for r in runs],
        "first_call_s": round(first_s, 2),
        "init_s": round(init_s, 2),
        "vs_eager_attention_max_abs": float((first.float() - reference.float()).abs().max()),
        "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "torch": torch.__version__,
    }
    if cuda:
        row.update(peak_gpu_mb=torch.cuda.max_memory_allocated() / 2**20,
                   peak_gpu_reserved_mb=torch.cuda.max_memory_reserved() / 2**20,
                   gpu_mem_method="torch.cuda.max_memory_allocated", gpu=torch.cuda.get_device_name())
    return row


# ----------------------------------------------------------------------------- native rows


def quantizer_for(spec: str, cfg):
    """The converter's quantizer for `spec`; a llama.cpp mix (q4_k_m, q3_k_m, q2_k) planned with π0's GQA.

    actquant_plugin's MixQuantizer.plan reads `ctx.config.heads` (OpenVLA's config), which a
    PiConfig lacks; the same rules (mix_types) are applied here with the PaliGemma LLM's query heads
    per K/V head. Other specs go to the converter as given.
    """
    try:
        from actquant_plugin.baselines import RECIPES, MixQuantizer, mix_types
    except ImportError:
        return spec
    if spec.lower() not in RECIPES:
        return spec
    from omnimodel.quant.plugin import TensorPlan

    class PiMix(MixQuantizer):
        def plan(self, tensors, ctx):
            types = mix_types(self.recipe, {n: tuple(w.shape) for n, w in tensors.items()}, cfg.llm.heads // cfg.llm.kv_heads)
            return {n: TensorPlan(t) for n, t in types.items()}

    return PiMix(spec)


def convert_all(args, quants: list[str], root: Path) -> dict:
    """Child: one random model on --device, every GGUF of `quants` written into root (encoded on --device)."""
    import torch

    from omnimodel.archs.pi0.zoo import random_stats
    from omnimodel.ggufio.convert import ModelSource, convert

    dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    t0 = time.perf_counter()
    model = random_pi(args.preset, args.device, dtype)
    out = {"init_s": round(time.perf_counter() - t0, 2), "ggufs": {}}
    src = ModelSource(dict(model.state_dict()), model.cfg, random_stats(SEED).to_dict(), args.preset, model)
    for q in quants:
        t0 = time.perf_counter()
        try:
            res = convert(src, root / f"{q.replace(':', '_')}.gguf", quantizer_for(q, model.cfg), device=args.device)
        except Exception as exc:  # one type that fails is one error row
            out["ggufs"][q] = {"error": f"convert: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"}
            continue
        counts: dict[str, int] = {}
        for t in res.types.values():
            counts[t] = counts.get(t, 0) + 1
        out["ggufs"][q] = {"path": str(res.path), "gguf_bytes": res.bytes, "bpw": round(res.bpw, 3), "types": counts,
                           "bpw_overall": round(res.bpw_overall, 3), "convert_s": round(time.perf_counter() - t0, 2)}
    return out


def build_native(args, root: Path) -> Path:
    """Render and build the arch's project once; returns policy_cli."""
    from omnimodel import archs
    from omnimodel.archs.pi0.model import preset
    from omnimodel.codegen.build import build_project
    from omnimodel.codegen.render import choose_skills, render_project

    arch = archs.get("pi05" if preset(args.preset).pi05 else "pi0")
    run = root / "native"
    run.mkdir(parents=True, exist_ok=True)
    render_project(run, choose_skills(arch.graph_skills()), arch)
    build_project(run / "cpp", run / "build", sandbox=args.sandbox, backend=args.backend, jobs=args.threads)
    return run / "build" / "policy_cli"


class MemoryPoller:
    """Peak GPU memory (nvidia-smi) and peak RSS (/proc VmHWM) of one process while it runs."""

    def __init__(self, gpu: bool):
        self.gpu = gpu and shutil.which("nvidia-smi") is not None
        self.base = self._device_used() if self.gpu else None
        self.device_peak = self.proc_peak = self.rss_peak = None
        self._stop = threading.Event()

    @staticmethod
    def _smi(query: str) -> list[list[str]]:
        try:
            out = subprocess.run(["nvidia-smi", f"--query-{query}", "--format=csv,noheader,nounits"],
                                 capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.SubprocessError):
            return []
        return [[c.strip() for c in ln.split(",")] for ln in out.splitlines() if ln.strip()]

    def _device_used(self) -> float | None:
        rows = self._smi("gpu=memory.used")
        return float(rows[0][0]) if rows and rows[0][0].replace(".", "").isdigit() else None

    def watch(self, pid: int) -> None:
        def loop():
            while not self._stop.is_set():
                try:
                    for ln in Path(f"/proc/{pid}/status").read_text().splitlines():
                        if ln.startswith("VmHWM:"):
                            self.rss_peak = max(self.rss_peak or 0.0, int(ln.split()[1]) / 1024)
                except OSError:
                    pass
                if self.gpu:
                    used = self._device_used()
                    if used is not None and self.base is not None:
                        self.device_peak = max(self.device_peak or 0.0, used - self.base)
                    for r in self._smi("compute-apps=pid,used_memory"):
                        if len(r) == 2 and r[0] == str(pid) and r[1].isdigit():
                            self.proc_peak = max(self.proc_peak or 0.0, float(r[1]))
                self._stop.wait(0.1)

        self._thread = threading.Thread(target=loop, daemon=True)
        self._thread.start()

    def stop(self) -> dict:
        self._stop.set()
        self._thread.join()
        out = {}
        if self.gpu:
            out["smi_gpu_delta_mb"] = self.device_peak
            out["smi_gpu_process_mb"] = self.proc_peak
        if self.rss_peak is not None:
            out["rss_hwm_mb"] = self.rss_peak
        return out


def _launch(cmd: list[str], timeout: float, gpu: bool) -> tuple[int | None, str, str, dict]:
    """Run `cmd` in its own process group under a memory poller; (rc or None on timeout, stdout, stderr, memory)."""
    poller = MemoryPoller(gpu)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    poller.watch(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the group we started (compile workers included)
        out, err = proc.communicate()
        rc = None
    return rc, out, err, poller.stop()


def _last_line(text: str) -> str:
    lines = [ln for ln in text.strip().splitlines() if ln.strip()]
    return lines[-1][-400:] if lines else "no output"


def run_native(args, cli: Path, gguf_path: Path, inputs: Path) -> dict:
    ngl = -1 if args.device == "cuda" else 0
    cmd = [str(cli), "bench", str(gguf_path), "--inputs", str(inputs), "-n", str(args.repeats), "--warmup", str(args.warmup),
           "--threads", str(args.threads), "--ngl", str(ngl)]
    rc, out, err, mem = _launch(cmd, args.native_timeout, args.device == "cuda")
    if rc is None:
        return {"error": f"policy_cli bench timed out after {args.native_timeout} s", **mem}
    lines = [json.loads(ln) for ln in out.splitlines() if ln.startswith("{")]
    if rc != 0 or not lines or lines[-1].get("status") != "ok":
        return {"error": lines[-1].get("message") if lines else _last_line(err), **mem}
    res = lines[-1]
    stages = res.get("stages", [])
    prefix = [s["median_ms"] for s in stages if s["stage"] == "prefix"]
    denoise = [s["median_ms"] for s in stages if s["stage"] == "denoise"]
    row = {"step_ms": res["median_ms"], "min_ms": res["min_ms"], "max_ms": res["max_ms"],
           "prefix_ms": prefix[0] if prefix else None, "denoise_ms": sum(denoise) if denoise else None,
           "denoise_step_ms": _median(denoise), "n_denoise_graphs": len(denoise),
           "stages": stages, "n_gpu_layers": ngl, "threads": args.threads, **mem}
    if mem.get("smi_gpu_delta_mb") is not None:
        row["peak_gpu_mb"] = mem["smi_gpu_process_mb"] or mem["smi_gpu_delta_mb"]
        row["gpu_mem_method"] = "nvidia-smi used_memory of the pid" if mem["smi_gpu_process_mb"] else "nvidia-smi memory.used minus the idle baseline"
    return row


def _child(argv: list[str], timeout: float, gpu: bool) -> dict:
    rc, out, err, mem = _launch([sys.executable, __file__, *argv], timeout, gpu)
    if rc is None:
        return {"error": f"timed out after {timeout:.0f} s", **mem}
    lines = [ln for ln in out.splitlines() if ln.startswith("{")]
    if rc != 0 or not lines:
        return {"error": _last_line(err), **mem}
    return {**json.loads(lines[-1]), **mem}


# ----------------------------------------------------------------------------- main


def _fmt(v, spec: str) -> str:
    return format(v, spec) if isinstance(v, (int, float)) else format("-", ">" + spec.split(".")[0].lstrip(">"))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--arch", choices=("pi05", "pi0"), default="pi05", help="the full-size preset of this arch unless --preset")
    ap.add_argument("--preset", default=None, help="pi05, pi0, pi05-tiny, pi0-tiny (default: --arch)")
    ap.add_argument("--device", default="cuda")
    ap.add_argument("--backend", default=None, help="GGML backend (default: cuda on --device cuda)")
    ap.add_argument("--native", default="f16,q4_k_m,q3_k_m", help="converter types (rtn:q4_k, rtn:q3_k also work)")
    ap.add_argument("--torch", default="eager,compile",
                    help="eager, compile (whole prefix pass + whole step), compile-regional (per layer, compiles faster), "
                         "compile-ro (compile with mode=reduce-overhead: CUDA graphs)")
    ap.add_argument("--sandbox", default="auto")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--compile-timeout", type=float, default=240.0, help="seconds for a torch.compile row, compile included")
    ap.add_argument("--native-timeout", type=float, default=300.0)
    ap.add_argument("--workdir", default=None)
    ap.add_argument("--out", default=None)
    ap.add_argument("--one-torch", help=argparse.SUPPRESS)
    ap.add_argument("--one-convert", help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.preset = args.preset or args.arch
    args.backend = args.backend or ("cuda" if args.device == "cuda" else "cpu")
    if args.one_torch:
        print(json.dumps(run_torch(args, args.one_torch)))
        return
    if args.one_convert:
        root, quants = args.one_convert.split("::", 1)
        print(json.dumps(convert_all(args, quants.split(","), Path(root))))
        return

    from omnimodel.archs.pi0.model import count_parameters, preset

    cfg = preset(args.preset)
    gpu = args.device == "cuda"
    t_start = time.perf_counter()
    common = ["--preset", args.preset, "--device", args.device, "--repeats", str(args.repeats), "--warmup", str(args.warmup),
              "--threads", str(args.threads)]
    rows = []
    for mode in filter(None, args.torch.split(",")):
        row = _child([*common, "--one-torch", mode], args.compile_timeout if mode.startswith("compile") else 900.0, gpu)
        if "peak_gpu_mb" not in row and row.get("smi_gpu_delta_mb") is not None:
            row["peak_gpu_mb"] = row["smi_gpu_process_mb"] or row["smi_gpu_delta_mb"]
        row.setdefault("config", f"pytorch-{'bf16' if gpu else 'fp32'}-sdpa-{mode}")
        rows.append(row)
        print(json.dumps(row), flush=True)

    quants = [q for q in args.native.split(",") if q]
    if quants:
        root = Path(args.workdir or tempfile.mkdtemp(prefix="omni-pi-latency-"))
        root.mkdir(parents=True, exist_ok=True)
        # the conversion (GPU + disk) runs while the project compiles (CPU); nothing is timed meanwhile
        conv: dict = {}
        t0 = time.perf_counter()
        worker = threading.Thread(target=lambda: conv.update(
            _child([*common, "--one-convert", f"{root}::{','.join(quants)}"], 1800.0, False)))
        worker.start()
        inputs = root / "inputs.gguf"
        write_inputs(inputs, cfg)
        try:
            cli = build_native(args, root)
            build_err = None
        except Exception as exc:  # a failed build is a row of the table, not the end of the benchmark
            cli, build_err = None, f"build: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}"
        build_s = time.perf_counter() - t0
        worker.join()
        print(json.dumps({"conversion": conv, "seconds": round(time.perf_counter() - t0, 1)}), flush=True)
        for q in quants:
            info = conv.get("ggufs", {}).get(q) or {"error": conv.get("error", "no GGUF written")}
            row = {"config": f"native-{q}", "build_s": round(build_s, 1)}
            if "error" in info or build_err:
                row["error"] = info.get("error") or build_err
            else:
                row.update({k: v for k, v in info.items() if k != "path"})
                row.update(run_native(args, cli, Path(info["path"]), inputs))
            Path(info.get("path", root / "none")).unlink(missing_ok=True)  # 6.7 GB at F16: keep the disk
            rows.append(row)
            print(json.dumps(row), flush=True)

    base = next((r for r in rows if r.get("config", "").endswith("sdpa-eager") and r.get("step_ms")), None)
    n_params = sum(count_parameters(cfg).values())
    print(f"\n{args.preset} ({n_params / 1e9:.2f}B params, prefix {cfg.prefix_len} tokens, {cfg.num_steps} steps, chunk {cfg.chunk}) "
          f"on {args.device}: ms, median of {args.repeats} after {args.warmup} warmup")
    hdr = f"{'config':<36}{'prefix':>9}{'denoise x' + str(cfg.num_steps):>12}{'step':>9}{'vs ' + (base['config'] if base else '-'):>34}{'peak GPU MB':>13}{'GGUF MB':>9}"
    print(hdr)
    for r in rows:
        if not r.get("step_ms"):
            print(f"{r.get('config'):<36}  ERROR {r.get('error')}")
            continue
        ratio = f"{base['step_ms'] / r['step_ms']:.2f}x" if base else "-"
        gguf_mb = r["gguf_bytes"] / 2**20 if r.get("gguf_bytes") else None
        print(f"{r['config']:<36}{_fmt(r.get('prefix_ms'), '>9.1f')}{_fmt(r.get('denoise_ms'), '>12.1f')}{r['step_ms']:>9.1f}"
              f"{ratio:>34}{_fmt(r.get('peak_gpu_mb'), '>13.0f')}{_fmt(gguf_mb, '>9.0f')}")
    print(f"(ratio: baseline step / row step; total wall {time.perf_counter() - t_start:.0f} s)")
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps({
            "preset": args.preset, "params": n_params, "device": args.device, "machine": os.uname().nodename,
            "prefix_tokens": cfg.prefix_len, "prompt_tokens": cfg.max_token_len, "cameras": cfg.num_cameras,
            "num_steps": cfg.num_steps, "chunk": cfg.chunk, "repeats": args.repeats, "warmup": args.warmup,
            "threads": args.threads, "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
