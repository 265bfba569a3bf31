"""π0.5 memory table (issue 18 item 4): per build, GGUF size, bits per weight, peak host RSS and peak GPU memory.

One checkpoint (the `pi05` 3.35B preset with random weights in LeRobot's bf16 layout, written by
`omnimodel zoo make pi05 DIR` unless --checkpoint names one) is converted to GGUF once per build:
f16, q8_0, and each bits-per-weight budget (4.0 / 3.5 / 3.0 / 2.5 / 2.0 by default). Without
calibration data a budget is met by round-to-nearest in the one GGML type whose bits per weight lie
closest to it (4.0 -> iq4_xs 4.25, 3.5 -> q3_k 3.44, 3.0 -> iq3_xxs 3.06, 2.5 -> iq2_s 2.56,
2.0 -> iq2_xxs 2.06; --budget-map overrides, e.g. 4.0=q4_k_m,3.5=q3_k_m for llama.cpp's mixes);
with --actquant-calib DIR every budget also gets an `actquant:B` row (ActQuant needs demonstrations).
Each conversion is `omnimodel quantize` in its own process: it reads the checkpoint memory-mapped
and encodes one tensor at a time (--convert-device cuda: the encoders on the GPU), so no second
fp32 copy of the model is ever held; its peak RSS is recorded too.

The native side: the arch's C++ project is rendered and built once (the graph reads the tensor
types from the GGUF, so one library serves every build; --backend cuda builds GGML with CUDA, with
OMNIMODEL_GGML_CMAKE_ARGS passed through by the toolchain). Per build a fresh Python process loads
the GGUF through runtime.NativePolicy (mmap; --ngl -1 puts every layer on the GPU when --device
cuda) and runs one control step, `predict_action(images, state, instruction)` (π0.5: the state
binned into the prompt inside the library). It reports its ru_maxrss (peak RSS: Python + numpy +
the library + weights it touched + compute buffers; `python_rss_mb` is the same process before
the load, to subtract), VmRSS / RssAnon / RssFile after the load and after the step, and, with a
GPU, its own used_memory from nvidia-smi after the load and after the step. The parent polls
nvidia-smi every 0.1 s while the step process runs: `gpu_peak_device_delta_mb` is the device's
memory.used peak minus its value before the process started (CUDA context included, ~0.5 GB),
`gpu_peak_process_mb` the peak of the process's own entry.

Rows go to --out as they finish (the file is rewritten after each row); each GGUF is deleted after
its row unless --keep-ggufs. --resume keeps the rows already in --out and skips their builds, so the
table can be filled over several shorter calls sharing one --work (checkpoint, GGML and project
builds are reused). The printed table gives each row's ratios to the f16 row of the same table.

  # GPU machine (16 cores, one H200; GGML CUDA build cached), the full table:
  python benchmarks/pi_memory.py --preset pi05 --device cuda --work /tmp/pi_mem \
      --out benchmarks/results/pi05_memory_h200.json
  # smoke run here (tiny preset, CPU, f16 and one low-bit build):
  python benchmarks/pi_memory.py --preset pi05-tiny --builds f16,3.5 --out /tmp/pi05_tiny_memory.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

BUILDS = "f16,q8_0,4.0,3.5,3.0,2.5,2.0"
# Round-to-nearest types a budget may pick (every one has an encoder in omnimodel.quant.encoders).
BUDGET_CANDIDATES = ("Q4_K", "IQ4_XS", "Q3_K", "IQ3_XXS", "Q2_K", "IQ2_S", "IQ2_XS", "IQ2_XXS", "IQ1_M")
INSTRUCTION = "pick up the black bowl and place it on the plate"
MB = 2**20


# ----------------------------------------------------------------------------- which method each build is


def budget_method(budget: float) -> str:
    """`rtn:TYPE` of the candidate GGML type whose bits per weight lie closest to `budget` (ties: fewer bits)."""
    from omnimodel.quant.formats import get_format

    best = min(BUDGET_CANDIDATES, key=lambda t: (abs(get_format(t).bpw - budget), get_format(t).bpw))
    return f"rtn:{best.lower()}"


def plan_builds(args) -> list[dict]:
    """[{build, method, budget_bpw}] for --builds, --budget-map and --actquant-calib."""
    overrides = {}
    for item in filter(None, (args.budget_map or "").split(",")):
        budget, _, method = item.partition("=")
        overrides[float(budget)] = method.strip()
    out = []
    for build in filter(None, (b.strip() for b in args.builds.split(","))):
        try:
            budget = float(build)
        except ValueError:
            out.append({"build": build, "method": build, "budget_bpw": None})
            continue
        out.append(
            {"build": build, "method": overrides.get(budget) or budget_method(budget), "budget_bpw": budget}
        )
        if args.actquant_calib:
            out.append({"build": f"actquant:{build}", "method": f"actquant:{budget}", "budget_bpw": budget})
    return out


# ----------------------------------------------------------------------------- checkpoint and library


def _cli(*args: str) -> list[str]:
    return [sys.executable, "-m", "omnimodel.cli", *args]


def ensure_checkpoint(args, work: Path) -> tuple[Path, float | None]:
    """--checkpoint, or `omnimodel zoo make PRESET` into work/ (kept for the next run); (path, seconds it took)."""
    if args.checkpoint:
        return Path(args.checkpoint), None
    ckpt = work / f"ckpt-{args.preset}"
    if (ckpt / "config.json").is_file():
        return ckpt, None
    t0 = time.perf_counter()
    subprocess.run(_cli("zoo", "make", args.preset, str(ckpt)), check=True)
    return ckpt, round(time.perf_counter() - t0, 1)


def build_library(args, ckpt: Path, work: Path) -> Path:
    """--library, or the arch's project rendered and built once into work/native; the .so path."""
    if args.library:
        return Path(args.library)
    from omnimodel import archs
    from omnimodel.codegen.build import build_project
    from omnimodel.codegen.render import choose_skills, render_project
    from omnimodel.runtime import LIBRARY

    arch = archs.for_checkpoint(ckpt)
    run = work / f"native-{arch.name}-{args.backend}"
    run.mkdir(parents=True, exist_ok=True)
    render_project(run, choose_skills(arch.graph_skills()), arch)
    build_project(run / "cpp", run / "build", sandbox=args.sandbox, backend=args.backend, jobs=args.threads)
    return run / "build" / LIBRARY


# ----------------------------------------------------------------------------- measuring one process


def _memory_poller(gpu: bool):
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from pi_latency import MemoryPoller  # nvidia-smi and /proc VmHWM polling, shared with the latency table

    return MemoryPoller(gpu)


def measured(cmd: list[str], timeout: float, gpu: bool) -> tuple[int | None, str, str, dict]:
    """Run `cmd` under the memory poller: (rc or None on timeout, stdout, stderr, polled memory)."""
    poller = _memory_poller(gpu)
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    poller.watch(proc.pid)
    try:
        out, err = proc.communicate(timeout=timeout)
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        proc.kill()  # the one process we started
        out, err = proc.communicate()
        rc = None
    return rc, out, err, poller.stop()


def _last_json(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                return None
    return None


def _failure(rc: int | None, err: str, timeout: float) -> str:
    if rc is None:
        return f"timed out after {timeout:.0f} s"
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    return f"exit {rc}: {lines[-1][-300:] if lines else 'no output'}"


def gguf_types(path: Path) -> dict[str, int]:
    """Tensor count per GGML type in a GGUF."""
    from gguf import GGUFReader

    counts: dict[str, int] = {}
    for t in GGUFReader(str(path)).tensors:
        counts[t.tensor_type.name] = counts.get(t.tensor_type.name, 0) + 1
    return counts


def convert_row(args, ckpt: Path, build: dict, gguf_path: Path) -> dict:
    """`omnimodel quantize` in its own process: size, bits per weight, time and peak RSS of the conversion."""
    cmd = _cli(
        "quantize",
        str(ckpt),
        "--method",
        build["method"],
        "--out",
        str(gguf_path),
        "--device",
        args.convert_device,
        "--json",
    )
    if build["method"].startswith("actquant"):
        cmd += ["--calib", str(args.actquant_calib)]
    t0 = time.perf_counter()
    rc, out, err, mem = measured(cmd, args.timeout, gpu=False)
    row = {"convert_s": round(time.perf_counter() - t0, 1), "convert_rss_peak_mb": mem.get("rss_hwm_mb")}
    res = _last_json(out)
    if rc != 0 or res is None:
        return {**row, "error": "convert " + _failure(rc, err, args.timeout)}
    size = gguf_path.stat().st_size
    return {**row, "gguf_bytes": size, "gguf_gb": round(size / 1e9, 3), "bpw": round(res["bpw"], 4),
            "bpw_overall": round(res["bpw_overall"], 4), "types": gguf_types(gguf_path)}  # fmt: skip


def step_row(args, library: Path, gguf_path: Path) -> dict:
    """One native load + control step in a fresh process: its own report plus the parent's GPU polling."""
    cmd = [sys.executable, str(Path(__file__).resolve()), "--step", str(library), str(gguf_path),
           "--ngl", str(args.ngl), "--threads", str(args.threads)] + (["--no-mmap"] if args.no_mmap else [])  # fmt: skip
    rc, out, err, mem = measured(cmd, args.timeout, gpu=args.device == "cuda")
    res = _last_json(out)
    if rc != 0 or res is None:
        return {"error": "step " + _failure(rc, err, args.timeout)}
    if args.device == "cuda":
        res["gpu_peak_device_delta_mb"] = mem.get("smi_gpu_delta_mb")
        res["gpu_peak_process_mb"] = mem.get("smi_gpu_process_mb")
    return res


# ----------------------------------------------------------------------------- the step process


def _proc_mb() -> dict[str, float]:
    """VmRSS, VmHWM, RssAnon, RssFile of this process in MiB."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("VmRSS", "VmHWM", "RssAnon", "RssFile"):
            out[key] = int(rest.split()[0]) / 1024
    return out


def _own_gpu_mb() -> float | None:
    """This process's used_memory in nvidia-smi (None without a GPU or when it is not listed)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        text = subprocess.run(["nvidia-smi", "--query-compute-apps=pid,used_memory", "--format=csv,noheader,nounits"],
                              capture_output=True, text=True, timeout=10).stdout  # fmt: skip
    except (OSError, subprocess.SubprocessError):
        return None
    for line in text.splitlines():
        cells = [c.strip() for c in line.split(",")]
        if len(cells) == 2 and cells[0] == str(os.getpid()) and cells[1].isdigit():
            return float(cells[1])
    return None


def run_step(library: str, gguf_path: str, ngl: int, threads: int, mmap: bool) -> dict:
    """Load the GGUF natively and run one control step; the memory this process used at each point."""
    import resource

    import numpy as np

    from omnimodel.runtime import NativeError, NativePolicy

    python = _proc_mb()
    t0 = time.perf_counter()
    with NativePolicy(library, gguf_path, n_threads=threads, n_gpu_layers=ngl, use_mmap=mmap) as policy:
        load_s = time.perf_counter() - t0
        loaded, gpu_loaded = _proc_mb(), _own_gpu_mb()
        rng = np.random.default_rng(0)
        s = policy.image_size
        images = [rng.integers(0, 256, (s, s, 3), dtype=np.uint8) for _ in range(policy.n_images)]
        state = rng.uniform(-0.5, 0.5, policy.proprio_dim).astype(np.float32)
        t0 = time.perf_counter()
        try:
            actions = policy.predict_action(images, state, INSTRUCTION)
            prompt = "library"
        except NativeError as exc:  # a GGUF without a tokenizer: BOS + synthetic ids
            if "tokenizer" not in str(exc):
                raise
            actions = policy.predict_ids(
                images, state, np.asarray([policy.bos_id(), *range(4, 38)], np.int32)
            )
            prompt = "token ids"
        step_s = time.perf_counter() - t0
        stepped, gpu_stepped = _proc_mb(), _own_gpu_mb()
    return {
        "load_s": round(load_s, 2), "step_s": round(step_s, 3), "prompt": prompt, "ngl": ngl, "mmap": mmap,
        "actions_finite": bool(np.isfinite(actions).all()), "action_shape": list(actions.shape),
        "python_rss_mb": round(python["VmRSS"], 1),
        "rss_after_load_mb": round(loaded["VmRSS"], 1), "rss_anon_after_load_mb": round(loaded["RssAnon"], 1),
        "rss_file_after_load_mb": round(loaded["RssFile"], 1),
        "rss_after_step_mb": round(stepped["VmRSS"], 1), "rss_anon_after_step_mb": round(stepped["RssAnon"], 1),
        "rss_file_after_step_mb": round(stepped["RssFile"], 1),
        "rss_peak_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        "gpu_process_after_load_mb": gpu_loaded, "gpu_process_after_step_mb": gpu_stepped,
    }  # fmt: skip


# ----------------------------------------------------------------------------- the table


def write_out(path: Path | None, meta: dict, rows: list[dict]) -> None:
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps({"meta": meta, "rows": rows}, indent=2))
    os.replace(tmp, path)


def print_table(rows: list[dict]) -> None:
    base = next((r for r in rows if r["build"] == "f16" and "error" not in r), None)

    def ratio(r: dict, key: str) -> str:
        if not base or r.get(key) is None or not base.get(key):
            return "-"
        return f"{r[key] / base[key]:.2f}"

    head = f"{'build':<14}{'method':<18}{'GB':>8}{'bpw':>7}{'x f16':>7}{'RSS MB':>9}{'x f16':>7}{'GPU MB':>9}{'x f16':>7}"
    print(head)
    for r in rows:
        if "error" in r:
            print(f"{r['build']:<14}{r['method']:<18}  {r['error']}")
            continue
        gpu = r.get("gpu_peak_process_mb") or r.get("gpu_peak_device_delta_mb")
        r["_gpu"] = gpu
        print(f"{r['build']:<14}{r['method']:<18}{r['gguf_gb']:>8.3f}{r['bpw']:>7.2f}{ratio(r, 'gguf_bytes'):>7}"
              f"{r['rss_peak_mb']:>9.0f}{ratio(r, 'rss_peak_mb'):>7}"
              f"{(f'{gpu:.0f}' if gpu else '-'):>9}{ratio(r, '_gpu'):>7}")  # fmt: skip
        r.pop("_gpu")


def gpu_name() -> str | None:
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=10,
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.strip().splitlines()[0] if out.stdout.strip() else None


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--preset", default="pi05", help="zoo preset (pi05: 3.35B; pi05-tiny for a smoke run)")
    ap.add_argument("--checkpoint", help="use this checkpoint instead of `zoo make PRESET`")
    ap.add_argument(
        "--builds",
        default=BUILDS,
        help="comma list: f16, q8_0, any --quant spec, or a bits-per-weight budget",
    )
    ap.add_argument(
        "--budget-map", default="", help="BUDGET=METHOD,... overriding a budget's round-to-nearest type"
    )
    ap.add_argument("--actquant-calib", help="demonstrations directory: adds an actquant:B row per budget")
    ap.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where the native step runs")
    ap.add_argument(
        "--backend", choices=("cpu", "cuda"), help="GGML build of the library (default: --device)"
    )
    ap.add_argument(
        "--ngl", type=int, help="n_gpu_layers of the native load (default: -1 with cuda, 0 on cpu)"
    )
    ap.add_argument(
        "--no-mmap", action="store_true", help="copy the CPU weights out of the file (use_mmap=0)"
    )
    ap.add_argument("--convert-device", help="where the encoders run (default: --device)")
    ap.add_argument("--library", help="a built libomnimodel_policy.so of the arch (skips the build)")
    ap.add_argument(
        "--work", default=None, help="checkpoint, GGUFs and the native build (default: a temp dir)"
    )
    ap.add_argument("--keep-ggufs", action="store_true")
    ap.add_argument("--threads", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--sandbox", default="auto")
    ap.add_argument("--timeout", type=float, default=7200.0, help="seconds per conversion and per step")
    ap.add_argument("--out", type=Path, help="JSON written after every row")
    ap.add_argument("--resume", action="store_true", help="keep --out's finished rows and skip their builds")
    ap.add_argument("--step", nargs=2, metavar=("LIBRARY", "GGUF"), help=argparse.SUPPRESS)
    args = ap.parse_args()
    args.backend = args.backend or args.device
    args.convert_device = args.convert_device or args.device
    if args.ngl is None:
        args.ngl = -1 if args.device == "cuda" else 0
    if args.step:
        print(json.dumps(run_step(args.step[0], args.step[1], args.ngl, args.threads, not args.no_mmap)))
        return 0

    import tempfile

    work = Path(args.work or tempfile.mkdtemp(prefix="pi_memory-"))
    work.mkdir(parents=True, exist_ok=True)
    ckpt, zoo_s = ensure_checkpoint(args, work)
    t0 = time.perf_counter()
    library = build_library(args, ckpt, work)
    meta = {
        "preset": args.preset, "checkpoint": str(ckpt), "zoo_make_s": zoo_s, "library": str(library),
        "library_build_s": round(time.perf_counter() - t0, 1), "device": args.device, "backend": args.backend,
        "ngl": args.ngl, "threads": args.threads, "convert_device": args.convert_device, "mmap": not args.no_mmap,
        "gpu": gpu_name(), "host": platform.node(), "cpus": os.cpu_count(), "argv": sys.argv[1:],
        "ggml_cmake_args": os.environ.get("OMNIMODEL_GGML_CMAKE_ARGS"),
        "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }  # fmt: skip
    rows: list[dict] = []
    if args.resume and args.out and args.out.is_file():
        rows = [r for r in json.loads(args.out.read_text()).get("rows", []) if "error" not in r]
    done = {r["build"] for r in rows}
    for build in plan_builds(args):
        if build["build"] in done:
            continue
        gguf_path = work / f"{args.preset}-{build['build'].replace(':', '_')}.gguf"
        row = {**build, **convert_row(args, ckpt, build, gguf_path)}
        if "error" not in row:
            row.update(step_row(args, library, gguf_path))
        if not args.keep_ggufs:
            gguf_path.unlink(missing_ok=True)
        rows.append(row)
        write_out(args.out, meta, rows)
        summary = row.get("error") or f"{row['gguf_gb']} GB, peak RSS {row['rss_peak_mb']} MB"
        print(f"{row['build']}: {summary}", flush=True)
    print_table(rows)
    return 0 if all("error" not in r for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
