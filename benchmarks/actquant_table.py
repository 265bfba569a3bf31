"""Paper-style Table 1 (closed-loop success per suite for fp16, rtn, llama-mix, imatrix and actquant
at several budgets) and Table 4 (the ablation at ~2.7 bpw), through the native build.

    PYTHONPATH=. python benchmarks/actquant_table.py --checkpoint $(omnimodel zoo path openvla-oft-tiny-suite) \
        --work runs/actquant_table --episodes-per-task 10

Calibration: the paper's rule on our suite's demonstrations (exported into WORK/calib_demos with
three episodes per task, so the long suite can take three). Every row is written as a GGUF, run
through the native library (`--runtime native`, default) or the PyTorch simulation of the same
GGUF (`--runtime sim`, no build needed), and evaluated on the same seeded episodes. Results go to
WORK/table.json and WORK/table.md; rows already in table.json are reused (resume after a stop).
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import os
import shutil
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

log = logging.getLogger("actquant_table")
BUDGETS = (4.0, 3.5, 3.0, 2.5, 2.0)
ABLATION_BPW = 2.7


# The single GGML type whose bits per weight is nearest each budget (what a uniform baseline can reach).
BUDGET_TYPES = {4.0: "iq4_xs", 3.5: "q3_k", 3.0: "iq3_xxs", 2.5: "iq2_s", 2.0: "iq2_xxs"}
LLAMA_MIXES = ("q4_k_m", "q3_k_m", "q2_k")


def budget_type(b: float) -> str:
    """BUDGET_TYPES entry of the nearest listed budget."""
    return BUDGET_TYPES[min(BUDGET_TYPES, key=lambda k: abs(k - b))]


def table1_rows(budgets: tuple[float, ...], calib_frames: int | None) -> list[tuple[str, str, dict]]:
    """(row name, method spec, extra options) of Table 1: fp16, then per budget rtn / imatrix at the nearest
    single type, llama.cpp's mixes (fixed recipes, their own bpw), and actquant at the budget."""
    rows = [("fp16", "f16", {})]
    rows += [(f"llama {m}", m, {}) for m in LLAMA_MIXES]
    for b in budgets:
        t = budget_type(b)
        rows += [(f"rtn {t} @{b}", f"rtn:{t}", {}), (f"imatrix {t} @{b}", f"imatrix:{t}", {}),
                 (f"actquant {b}", "actquant", {"bpw": b})]  # fmt: skip
    return rows


def table4_rows(bpw: float) -> list[tuple[str, str, dict]]:
    """The ablation of Table 4: uniform types with growing scale objectives, then HSIC allocation."""
    rows = []
    for label, obj in (("RTN block quantization", "none"), ("+ magnitude-weighted scale", "magnitude"),
                       ("+ action-only Fisher", "action_fisher"), ("+ action-mixed Fisher", "amf")):  # fmt: skip
        rows.append(
            (f"ablation: {label}", "actquant", {"bpw": bpw, "allocation": "uniform", "objective": obj})
        )
    rows.append(
        (
            "ablation: + HSIC bit allocation",
            "actquant",
            {"bpw": bpw, "allocation": "hsic", "objective": "amf"},
        )
    )
    rows.append(("ablation: authors' preset", "actquant", {"bpw": bpw, "preset": "authors"}))
    return rows


def in_plan_order(rows: list[dict], names: list[str]) -> list[dict]:
    """`rows` sorted as `names` lists them (the plan's order, not the run's); unknown names last, as given."""
    index = {n: i for i, n in enumerate(names)}
    return sorted(rows, key=lambda r: index.get(r["name"], len(index)))


def ensure_demos(work: Path, episodes: int) -> Path:
    """Demonstrations for calibration (3 per task, so the long suite can take three)."""
    out = work / "calib_demos"
    if not out.exists():
        from omnimodel.suite.export import export_suites

        export_suites(out, episodes_per_task=episodes)
    return out


def ensure_build(work: Path, build: Path | None) -> Path:
    """The native build every row shares: `--build`, else WORK/native (an f16 port of the checkpoint made once)."""
    if build is not None:
        if not (build / "libomnimodel_policy.so").exists():
            raise SystemExit(
                f"--build {build}: no libomnimodel_policy.so there; pass RUN/build of a finished port"
            )
        return build
    return work / "native" / "build"


def ensure_port(work: Path, ckpt: Path, arch: str) -> Path:
    """WORK/native: `omnimodel port ARCH --checkpoint CKPT --quant f16` once (its build serves every GGUF)."""
    run = work / "native"
    if not (run / "build" / "libomnimodel_policy.so").exists():
        import subprocess

        subprocess.run([sys.executable, "-m", "omnimodel.cli", "port", arch, "--checkpoint", str(ckpt), "--quant", "f16",
                        "--out", str(run), "--force"], check=True)  # fmt: skip
    return run / "build"


def quantize_row(ckpt: Path, spec: str, opts: dict, run: Path, demos: Path, calib_frames: int | None) -> dict:
    """Write run/model.gguf for one row; returns bpw and (for actquant) the report path."""
    from actquant_plugin.quantize import quantize

    run.mkdir(parents=True, exist_ok=True)
    bpw = opts.get("bpw")
    extra = {k: v for k, v in opts.items() if k != "bpw"}
    needs_calib = spec.startswith(("actquant", "imatrix"))
    res = quantize(str(ckpt), spec, run / "model.gguf", bpw, demos if needs_calib else None,
                   calib_frames if needs_calib else None, extra)  # fmt: skip
    return {
        "bpw": res.convert.bpw,
        "bytes": res.convert.bytes,
        "report": str(res.report_path) if res.report_path else None,
    }


def prepare_run(run: Path, ckpt: Path, runtime: str, build: Path | None) -> None:
    """Point run/ at the shared native build and the checkpoint (its tokenizer)."""
    if runtime == "native":
        link = run / "build"
        if not link.exists():
            link.symlink_to(build.resolve())
        (run / "port.json").write_text(json.dumps({"checkpoint": str(ckpt)}))


def load_policy_for(run: Path, ckpt: Path, runtime: str, threads: int = 0):
    """The native policy of run/model.gguf, or the PyTorch simulation of the same GGUF (picklable entry point)."""
    if runtime == "native":
        from omnimodel import runtime as rt

        return rt.load(run, checkpoint=ckpt, **({"n_threads": threads} if threads else {}))
    import torch

    from omnimodel import archs
    from omnimodel.quant_sim import simulate

    if threads:
        torch.set_num_threads(threads)
    policy = archs.for_checkpoint(ckpt).load_policy(ckpt)
    simulate(policy.model, run / "model.gguf")
    return policy


def markdown(rows: list[dict], suites: list[str]) -> str:
    """The table as Markdown: one row per method, success % per suite and the mean."""
    head = (
        "| method | bpw | " + " | ".join(suites) + " | mean |\n|---|---|" + "---|" * (len(suites) + 1) + "\n"
    )
    body = ""
    for r in rows:
        cells = " | ".join(f"{100 * r['success_per_suite'].get(s, float('nan')):.1f}" for s in suites)
        body += f"| {r['name']} | {r['bpw']:.3f} | {cells} | {100 * r['success_mean']:.1f} |\n"
    return head + body


def main() -> None:
    """Quantize, run and evaluate every row; write table.json and table.md."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--checkpoint", type=Path, required=True)
    ap.add_argument("--work", type=Path, default=Path("runs/actquant_table"))
    ap.add_argument("--demos", type=Path, default=None, help="calibration demonstrations (default: exported)")
    ap.add_argument("--calib-frames", type=int, default=None)
    ap.add_argument("--episodes-per-task", type=int, default=10)
    ap.add_argument("--suites", default="", help="comma-separated (default: all four)")
    ap.add_argument("--budgets", default=",".join(map(str, BUDGETS)))
    ap.add_argument("--ablation-bpw", type=float, default=ABLATION_BPW)
    ap.add_argument("--only", default="", help="comma-separated row-name prefixes to run")
    ap.add_argument("--runtime", choices=("native", "sim"), default="native")
    ap.add_argument(
        "--build",
        type=Path,
        default=None,
        help="an existing native build directory (e.g. RUN/build of an f16 port of the checkpoint)",
    )
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--workers", type=int, default=os.cpu_count() or 1, help="eval processes (one thread each)"
    )
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(message)s")

    from omnimodel.atomic import atomic_path
    from omnimodel.eval import (
        action_protocol,
        evaluate_closed_loop,
        evaluate_closed_loop_parallel,
        suite_eval_tasks,
    )

    args.work.mkdir(parents=True, exist_ok=True)
    suites = [s for s in args.suites.split(",") if s] or None
    tasks = suite_eval_tasks(suites)
    suite_names = sorted({t.suite for t in tasks})
    demos = args.demos or ensure_demos(args.work, 3)
    build = None
    if args.runtime == "native":
        from omnimodel import archs

        build = args.build and ensure_build(args.work, args.build)
        build = build or ensure_port(args.work, args.checkpoint, archs.for_checkpoint(args.checkpoint).name)
    postprocess, replan = action_protocol(
        args.checkpoint
    )  # the arch's eval protocol (π: LIBERO actions, replan 5)
    budgets = tuple(float(b) for b in args.budgets.split(",") if b)
    plan = [("table1", *r) for r in table1_rows(budgets, args.calib_frames)] + [
        ("table4", *r) for r in table4_rows(args.ablation_bpw)
    ]
    only = [p for p in args.only.split(",") if p]
    out_json = args.work / "table.json"
    done = {r["name"]: r for r in json.loads(out_json.read_text())["rows"]} if out_json.exists() else {}
    for table, name, spec, opts in plan:
        if only and not any(name.startswith(p) for p in only):
            continue
        if name in done:
            continue
        run = (
            args.work / "runs" / name.replace(" ", "_").replace(":", "").replace("'", "").replace("+", "plus")
        )
        if run.exists():
            shutil.rmtree(run)
        t0 = time.perf_counter()
        q = quantize_row(args.checkpoint, spec, opts, run, demos, args.calib_frames)
        t_quant = time.perf_counter() - t0
        prepare_run(run, args.checkpoint, args.runtime, build)
        if args.workers > 1:
            factory = functools.partial(load_policy_for, run, args.checkpoint, args.runtime, 1)
            res = evaluate_closed_loop_parallel(factory, functools.partial(suite_eval_tasks, suites),
                                                args.episodes_per_task, args.seed, args.workers, postprocess,
                                                replan=replan)  # fmt: skip
        else:
            policy = load_policy_for(run, args.checkpoint, args.runtime)
            res = evaluate_closed_loop(
                policy, tasks, args.episodes_per_task, args.seed, postprocess, replan=replan
            )
            if hasattr(policy, "close"):
                policy.close()
        row = {"table": table, "name": name, "spec": spec, "options": opts, "bpw": q["bpw"], "bytes": q["bytes"],
               "report": q["report"], "quantize_s": t_quant, "eval_s": res.seconds,
               "success_per_suite": res.success_per_suite,
               "success_mean": sum(res.success_per_suite.values()) / max(len(res.success_per_suite), 1)}  # fmt: skip
        done[name] = row
        log.info("%s: %.3f bpw, mean success %.1f%%", name, q["bpw"], 100 * row["success_mean"])
        with atomic_path(out_json) as tmp:
            tmp.write_text(json.dumps({"runtime": args.runtime, "episodes_per_task": args.episodes_per_task, "seed": args.seed,
                                       "checkpoint": str(args.checkpoint), "rows": list(done.values())}, indent=1))  # fmt: skip
    rows = in_plan_order(list(done.values()), [name for _, name, _, _ in plan])
    md = "## Table 1\n\n" + markdown([r for r in rows if r["table"] == "table1"], suite_names)
    md += f"\n## Table 4 (ablation, {args.ablation_bpw} bpw)\n\n" + markdown(
        [r for r in rows if r["table"] == "table4"], suite_names
    )
    with atomic_path(args.work / "table.md") as tmp:
        tmp.write_text(md)
    print(md)


if __name__ == "__main__":
    main()
