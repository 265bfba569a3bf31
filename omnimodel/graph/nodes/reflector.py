"""reflector: isolate the first failing module, diagnose it, apply a deterministic fix where one exists."""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch

from omnimodel.errors import CheckpointError
from omnimodel.graph.state import PortState
from omnimodel.parity import compare
from omnimodel.quant_sim import read_gguf_dequantized, rope_permute


def _expected(key: str, value: torch.Tensor, cfg) -> dict[str, np.ndarray]:
    """What the GGUF must hold for checkpoint tensor `key`: the converter's own canonical layout."""
    from omnimodel.ggufio.convert import apply_transforms, default_transforms, gguf_tensors

    canonical = default_transforms(cfg)
    return {
        name: apply_transforms(name, w.float(), canonical.get(name, []), cfg).numpy()
        for name, w in gguf_tensors({key: value}).items()
    }


def diagnose_layout(run_dir: Path, module: str | None, cfg: dict, checkpoint: str) -> list[dict]:
    """Compare the GGUF's tensors of `module` (or all) with the checkpoint; name each misplaced one."""
    from omnimodel import archs

    arch = archs.for_checkpoint(Path(checkpoint))
    config = arch.read_config(Path(checkpoint))
    state = arch.read_state_dict(Path(checkpoint))
    stored = read_gguf_dequantized(run_dir / "model.gguf")
    findings = []
    for key, value in state.items():
        if module and not key.startswith(module + "."):
            continue
        try:
            expected = _expected(key, value, config)
        except CheckpointError:  # a key with no GGUF name: nothing the converter wrote to compare
            continue
        for target, want in expected.items():
            got = stored.get(target)
            if got is None:
                findings.append({"tensor": target, "kind": "missing", "detail": f"{target} absent from model.gguf"})
                continue
            if got.shape == want.shape and compare(got, want).cosine > 0.99:
                continue
            kind = "layout"
            if want.ndim == 2 and got.shape == want.T.shape and compare(got, want.T).cosine > 0.99:
                kind = "transposed"
            elif target.startswith("blk.") and got.shape == want.shape:
                heads = cfg["heads"]
                if compare(got, value.float().numpy()).cosine > 0.99:
                    kind = "rope_permutation_missing"
                elif compare(got, rope_permute(want, heads)).cosine > 0.99:
                    kind = "rope_permuted_twice"
            findings.append(
                {"tensor": target, "checkpoint_key": key, "kind": kind, "expected_shape": list(want.shape), "got_shape": list(got.shape)}
            )
    return findings


def _first_failing(validation: dict, plan: dict) -> dict | None:
    order = {u["name"]: i for i, u in enumerate(plan.get("units", []))}
    failing = [m for m in validation.get("modules", []) if not m.get("passed")]
    failing.sort(key=lambda m: order.get(m["name"], len(order)))
    return failing[0] if failing else None


def classify(module: dict | None, validation: dict) -> dict:
    """Failure class from the validator's numbers: build, crash, shape, nan, tolerance."""
    if validation.get("build_error"):
        return {"kind": "build", "detail": validation["build_error"][-2000:]}
    if validation.get("run_error"):
        return {"kind": "crash", "detail": validation["run_error"][-2000:]}
    if module is None:
        e2e = validation.get("end_to_end", {})
        return {"kind": "tolerance", "detail": f"end to end: {e2e}"}
    if module.get("missing"):
        return {"kind": "not_run", "detail": f"{module['name']}: the native build produced no output for it"}
    if not module.get("shape_ok", True):
        return {"kind": "shape", "detail": f"{module['name']}: output shape {module.get('got_shape')} vs {module.get('ref_shape')}"}
    if not module.get("finite", True):
        return {"kind": "nan", "detail": f"{module['name']}: NaN/Inf in the output"}
    return {"kind": "tolerance", "detail": f"{module['name']}: cosine {module.get('cosine')} below {module.get('threshold')}"}


def to_agent(state: PortState, plan: dict, module: dict | None, diagnosis: dict) -> dict | None:
    """With --llm, a failure of a module the agent wrote (or a build break while one exists) is sent back to it."""
    llm_units = [u["name"] for u in plan.get("units", []) if u.get("realised_by") == "llm"]
    if not state.get("llm") or not llm_units:
        return None
    if diagnosis["kind"] == "build":
        target = llm_units[0]
    elif module is not None and module["name"] in llm_units:
        target = module["name"]
    else:
        return None
    detail = diagnosis["detail"]
    if module is not None and module["name"] == target and module.get("cosine") is not None:
        detail = (
            f"{target}: cosine {module['cosine']:.7f} (threshold {module.get('threshold')}), max abs err "
            f"{module.get('max_abs_err'):.3g}, output shape {module.get('got_shape')} vs reference {module.get('ref_shape')}"
        )
    return {"kind": diagnosis["kind"], "detail": detail, "redo": "agent", "module": target}


def reflector(state: PortState) -> dict:
    """Diagnose; a deterministic fix returns status 'retry' with what to redo, else 'failed'."""
    t0 = time.perf_counter()
    run_dir = Path(state["run_dir"])
    validation = json.loads((run_dir / "validation.json").read_text())
    plan = json.loads((run_dir / "plan.json").read_text())
    analysis_cfg = json.loads((run_dir / "analysis.json").read_text())["config"]
    module = _first_failing(validation, plan)
    name = module["name"] if module else None
    diagnosis = classify(module, validation)
    iteration = state.get("iteration", 0) + 1
    out: dict = {"iteration": iteration, "failing_module": name, "timings": {f"reflector.{iteration}": 0.0}}
    back = to_agent(state, plan, module, diagnosis)
    if back is not None:  # an LLM-written module failed: the diagnosis goes back to the agent
        out.update(
            status="retry",
            failing_module=back["module"],
            diagnosis=back,
            fixes=[{"iteration": iteration, "module": back["module"], "rule": f"agent:{back['kind']}"}],
        )
        out["timings"] = {f"reflector.{iteration}": time.perf_counter() - t0}
        return out
    if diagnosis["kind"] in ("tolerance", "shape", "nan", "crash", "not_run"):
        scope = None if diagnosis["kind"] == "crash" or name in (None, "end_to_end") else name
        findings = diagnose_layout(run_dir, scope, analysis_cfg, state["checkpoint"])
        if not findings and scope is not None:
            findings = diagnose_layout(run_dir, None, analysis_cfg, state["checkpoint"])
        fixable = [f for f in findings if f["kind"] in ("transposed", "rope_permutation_missing", "rope_permuted_twice", "layout")]
        if fixable:
            overrides = {f["tensor"]: "canonical" for f in fixable}
            diagnosis = {
                "kind": fixable[0]["kind"],
                "detail": "; ".join(f"{f['tensor']}: {f['kind']} (expected {f['expected_shape']}, got {f['got_shape']})" for f in fixable),
                "redo": "converter",
            }
            out.update(
                status="retry",
                diagnosis=diagnosis,
                transform_overrides=overrides,
                fixes=[{"iteration": iteration, "module": name, "tensors": sorted(overrides), "rule": fixable[0]["kind"]}],
            )
            out["timings"] = {f"reflector.{iteration}": time.perf_counter() - t0}
            return out
    out.update(status="failed", diagnosis=diagnosis)
    out["timings"] = {f"reflector.{iteration}": time.perf_counter() - t0}
    return out
