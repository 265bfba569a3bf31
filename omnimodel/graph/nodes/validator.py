"""validator: build cpp/ in the sandbox, run every module on its cached inputs, then the whole policy."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from omnimodel.analysis import END_TO_END, read_reference
from omnimodel.errors import PipelineError
from omnimodel.graph.nodes.simulator import simulated_reference_dir
from omnimodel.graph.state import PortState
from omnimodel.parity import ACTION_COSINE_QUANT, ACTION_MAX_ABS, COSINE_THRESHOLD, compare
from omnimodel.plan import Plan
from omnimodel.quantspec import QuantSpec
from omnimodel.validation import Validation

CLI = "policy_cli"


def _build_and_run(state: PortState, run_dir: Path, ref_dir: Path, out_dir: Path):
    from omnimodel.sandbox import get_sandbox
    from omnimodel.sandbox.cmake_project import compile_and_run_cmake_project
    from omnimodel.toolchain import ensure_ggml_build

    box = get_sandbox(state.get("sandbox", "auto"))
    ggml = ensure_ggml_build(state.get("backend", "cpu"), box)
    out_dir.mkdir(parents=True, exist_ok=True)
    gguf_path = (run_dir / "model.gguf").resolve()
    result = compile_and_run_cmake_project(
        run_dir / "cpp",
        run_dir / "build",
        box,
        ggml,
        run=[CLI, "validate", str(gguf_path), str(ref_dir.resolve()), str(out_dir.resolve())],
        configure_args=[f"-DGGML_DIR={ggml.prefix}"],
        ro_mounts={gguf_path: str(gguf_path), ref_dir.resolve(): str(ref_dir.resolve())},
        run_timeout_s=1800,
        memory_mb=8192,
    )
    if result.ok:
        # The whole policy from raw uint8 images and proprio (crop, normalisation, un-normalisation in C++).
        build_dir = (run_dir / "build").resolve()
        e2e = (ref_dir / f"{END_TO_END}.gguf").resolve()
        res = box.run(
            [str(build_dir / CLI), "run", str(gguf_path), "--inputs", str(e2e)],
            build_dir,
            timeout_s=1800,
            memory_mb=8192,
            ro_mounts={gguf_path: str(gguf_path), ref_dir.resolve(): str(ref_dir.resolve()), ggml.prefix: str(ggml.prefix)},
            env={"LD_LIBRARY_PATH": str(ggml.lib_dir)},
        )
        if res.ok:
            line = [ln for ln in res.stdout.splitlines() if ln.startswith("{")][-1]
            (out_dir / "end_to_end_actions.json").write_text(line)
        else:
            result.run = res
    return result, box.name


@contextmanager
def native_progress(build_dir: Path, out_dir: Path, modules: list[str], console: Console | None = None) -> Iterator[None]:
    """A transient progress line on stderr while the native build and validation run: build, then modules k/N.

    The sandbox runs both in one call, so the phase is read from disk: the CLI binary appears when
    the build is done, and the validator writes one `<module>.gguf` per module it has run.
    """
    console = console or Console(stderr=True)
    if not console.is_terminal:  # a log gets the node lines only (rich would still print an empty line)
        yield
        return
    columns = (SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn())
    stop = threading.Event()
    started = time.time()
    with Progress(*columns, console=console, transient=True) as progress:
        task = progress.add_task("validator: building cpp/", total=None)

        def poll() -> None:
            while not stop.wait(0.25):
                done = sum((out_dir / f"{m}.gguf").exists() for m in modules)
                exe = build_dir / CLI
                if done or (exe.exists() and exe.stat().st_mtime >= started - 1):
                    progress.update(task, description="validator: modules", total=len(modules), completed=done)

        watcher = threading.Thread(target=poll, daemon=True)
        watcher.start()
        try:
            yield
        finally:
            stop.set()
            watcher.join()


def validate_outputs(plan: Plan, ref_dir: Path, out_dir: Path, spec: QuantSpec) -> tuple[list[dict], dict]:
    """Per-module parity of the native outputs against the reference, then the end-to-end actions."""
    wclass = spec.weight_class
    threshold = COSINE_THRESHOLD[wclass]
    modules = []
    for unit in plan.units:
        ref_file = ref_dir / f"{unit['name']}.gguf"
        if not ref_file.exists():
            continue
        ref = read_reference(ref_file)["out"]
        got_file = out_dir / f"{unit['name']}.gguf"
        entry = {"name": unit["name"], "realised_by": unit["realised_by"], "threshold": threshold, "ref_shape": list(ref.shape)}
        if not got_file.exists():
            modules.append({**entry, "missing": True, "passed": False, "cosine": None, "max_abs_err": None})
            continue
        got = read_reference(got_file)["out"]
        p = compare(got, ref)
        modules.append(
            {
                **entry,
                "got_shape": list(got.shape),
                "cosine": p.cosine,
                "max_abs_err": p.max_abs_err,
                "finite": p.finite,
                "shape_ok": p.shape_ok,
                "passed": p.passed(threshold),
            }
        )
    e2e = {}
    ref = read_reference(ref_dir / f"{END_TO_END}.gguf")
    norm_file = out_dir / f"{END_TO_END}.gguf"
    actions_file = out_dir / "end_to_end_actions.json"
    if norm_file.exists() and actions_file.exists():
        actions = np.asarray(json.loads(actions_file.read_text())["actions"], np.float32)
        p = compare(actions, ref["actions"])
        pn = compare(read_reference(norm_file)["out"], ref["actions_norm"])
        limit = ACTION_MAX_ABS[wclass]
        passed = p.finite and p.shape_ok and (p.max_abs_err <= limit if limit is not None else p.cosine >= ACTION_COSINE_QUANT)
        e2e = {
            "action_cosine": p.cosine,
            "action_max_abs_err": p.max_abs_err,
            "action_norm_cosine": pn.cosine,
            "limit_max_abs": limit,
            "passed": bool(passed),
        }
    else:
        e2e = {"passed": False, "missing": True}
    return modules, e2e


def validator(state: PortState) -> dict:
    """Writes validation.json; status ok only when every module and the end-to-end check pass."""
    t0 = time.perf_counter()
    run_dir = Path(state["run_dir"])
    plan = Plan.read(run_dir)
    spec = QuantSpec.parse(state.get("quant", "f32"))
    ref_dir = run_dir / "reference"
    if spec.weight_class == "quant":  # the simulator's reference: PyTorch with the GGUF's dequantized weights
        ref_dir = simulated_reference_dir(run_dir)
        if not (ref_dir / f"{END_TO_END}.gguf").exists():
            raise PipelineError(f"{ref_dir}: no simulated reference; the simulator stage must run before the validator")
    out_dir = run_dir / "build" / "validate_out"
    for stale in [*out_dir.glob("*.gguf"), *out_dir.glob("*.json")]:
        stale.unlink()
    modules = [u["name"] for u in plan.units if (ref_dir / f"{u['name']}.gguf").exists()]
    with native_progress(run_dir / "build", out_dir, modules):
        result, sandbox_name = _build_and_run(state, run_dir, ref_dir, out_dir)
    validation = Validation(quant=str(spec), sandbox=sandbox_name, reference=str(ref_dir.relative_to(run_dir)))
    failed = result.failed_step()
    if failed and failed[0] in ("configure", "build"):
        step, res = failed
        validation.build_error = f"{step} failed (exit {res.exit_code}, killed_by={res.killed_by}):\n{res.stdout[-4000:]}\n{res.stderr[-4000:]}"
        validation.end_to_end = {"passed": False}
    else:
        if failed:
            res = failed[1]
            validation.run_error = f"{CLI} validate failed (exit {res.exit_code}, killed_by={res.killed_by}):\n{res.stderr[-4000:]}"
        validation.modules, validation.end_to_end = validate_outputs(plan, ref_dir, out_dir, spec)
        if spec.weight_class == "quant" and (out_dir / "end_to_end_actions.json").exists():
            actions = np.asarray(json.loads((out_dir / "end_to_end_actions.json").read_text())["actions"], np.float32)
            fp = compare(actions, read_reference(run_dir / "reference" / f"{END_TO_END}.gguf")["actions"])
            validation.end_to_end["action_cosine_vs_fp32"] = fp.cosine
            validation.end_to_end["reference"] = "quantizer simulation"
    validation.write(run_dir)
    elapsed = time.perf_counter() - t0
    key = "validator" if state.get("iteration", 0) == 0 else f"validator.{state.get('iteration')}"
    return {"status": "ok" if validation.passed else "failed", "timings": {key: elapsed}}
