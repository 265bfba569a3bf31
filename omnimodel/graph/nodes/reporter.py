"""reporter: report.json and report.md for the run (success or failure), per DESIGN.md."""

from __future__ import annotations

import json
from pathlib import Path

from omnimodel.analysis import write_json
from omnimodel.atomic import atomic_path
from omnimodel.graph.state import PortState
from omnimodel.plan import FILE as PLAN_FILE
from omnimodel.plan import Plan
from omnimodel.validation import Validation


def _load(path: Path) -> dict:
    return json.loads(path.read_text()) if path.exists() else {}


def first_line(text: str, limit: int = 240) -> str:
    """The first non-empty line of a message, cut to `limit` characters."""
    line = next((ln.strip() for ln in str(text).splitlines() if ln.strip()), "")
    return line if len(line) <= limit else line[: limit - 1] + "…"


def _error_line(text: str) -> str:
    """A compiler's or a crash's telling line: the first that says error, else the first line."""
    lines = [ln.strip() for ln in str(text).splitlines() if ln.strip()]
    hit = next((ln for ln in lines[1:] if "error" in ln.lower()), None)
    return first_line(hit or (lines[0] if lines else ""))


def failure_reason(state: PortState) -> str:
    """One sentence saying why the run failed: the module and the diagnosis, never a dict."""
    diagnosis = state.get("diagnosis") or {}
    module = state.get("failing_module")
    kind = diagnosis.get("kind")
    raw = diagnosis.get("detail") or state.get("error") or ""
    if kind == "build":
        detail = f"the C++ build failed: {_error_line(raw)}" if raw else "the C++ build failed"
    elif kind == "crash":
        detail = f"the native run crashed: {_error_line(raw)}" if raw else "the native run crashed"
    else:
        detail = first_line(raw) or "the native build did not reach parity and no fix applied"
    if module and module not in detail:
        return f"{module}: {detail}"
    return detail


def build_report(state: PortState) -> dict:
    """The report's content from the run directory's artifacts and the state."""
    run_dir = Path(state["run_dir"])
    validation = Validation.read_if_present(run_dir)
    plan = Plan.read(run_dir) if (run_dir / PLAN_FILE).exists() else None
    gguf_info = _load(run_dir / "gguf.json")
    realised = plan.realised_by() if plan else {}
    modules = [
        {
            "name": m["name"],
            "realised_by": realised.get(m["name"], m.get("realised_by", "skill")),
            "cosine": m.get("cosine"),
            "max_abs_err": m.get("max_abs_err"),
            "passed": m.get("passed", False),
        }
        for m in (validation.modules if validation else [])
    ]
    status = "ok" if state.get("status") == "ok" else "failed"
    usage = state.get("llm_usage") or {}
    quant_report = _load(run_dir / "quant_report.json")
    report = {
        "model": state.get("model"),
        "status": status,
        "checkpoint": state.get("checkpoint"),
        "quant": state.get("quant"),
        "backend": state.get("backend"),
        "modules": modules,
        "end_to_end": validation.end_to_end if validation else {},
        "gguf": {"path": gguf_info.get("path"), "bytes": gguf_info.get("bytes"), "bpw": gguf_info.get("bpw")},
        "llm": {
            "calls": usage.get("calls", 0),
            "input_tokens": usage.get("input_tokens", 0),
            "output_tokens": usage.get("output_tokens", 0),
        },
        "timings": state.get("timings", {}),
        "iterations": state.get("iteration", 0),
        "fixes": state.get("fixes", []),
        "failing_module": None if status == "ok" else state.get("failing_module"),
        "diagnosis": None if status == "ok" else state.get("diagnosis"),
        "error": state.get("error"),
        "reason": None if status == "ok" else failure_reason(state),
    }
    if quant_report:  # a calibration-driven quantizer: its stages' seconds and peak memory
        report["quantizer"] = {
            "method": quant_report.get("method"),
            "budget_bpw": quant_report.get("budget_bpw"),
            "planned_bpw": quant_report.get("planned_bpw"),
            "calibration": quant_report.get("calibration"),
            "timings": quant_report.get("timings", {}),
            "memory": quant_report.get("memory", {}),
        }
    return report


def render_markdown(report: dict) -> str:
    """A human-readable report."""
    lines = [f"# Port of {report['model']}: {report['status'].upper()}", ""]
    e2e = report.get("end_to_end") or {}
    if e2e:
        lines += [
            f"End to end: action cosine {e2e.get('action_cosine')}, max abs error {e2e.get('action_max_abs_err')} "
            f"(un-normalised units, reference: {e2e.get('reference', 'pytorch')})",
            "",
        ]
    g = report["gguf"]
    lines += [f"GGUF: {g['path']} — {g['bytes']} bytes, {g['bpw']} bits per weight (quantized tensors)", ""]
    if report["status"] != "ok":
        diagnosis = report.get("diagnosis") or {}
        lines += [f"Failed: {report.get('reason')}", "", f"Failing module: `{report.get('failing_module')}`"]
        if diagnosis:
            lines += [f"Diagnosis ({diagnosis.get('kind')}):", "", "```", str(diagnosis.get("detail", "")).rstrip(), "```"]
        lines.append("")
        if report.get("error"):
            lines += [f"Error: {report['error']}", ""]
    for fix in report.get("fixes", []):
        lines.append(f"- fix applied: {fix}")
    lines += ["", "| module | realised by | cosine | max abs err | passed |", "|---|---|---|---|---|"]
    for m in report["modules"]:
        cos = f"{m['cosine']:.7f}" if isinstance(m["cosine"], float) else m["cosine"]
        err = f"{m['max_abs_err']:.3g}" if isinstance(m["max_abs_err"], float) else m["max_abs_err"]
        lines.append(f"| {m['name']} | {m['realised_by']} | {cos} | {err} | {'yes' if m['passed'] else 'NO'} |")
    lines += ["", "Timings (s): " + ", ".join(f"{k} {v:.1f}" for k, v in report["timings"].items())]
    quant = report.get("quantizer")
    if quant:
        lines.append(f"Quantizer {quant['method']} stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in quant["timings"].items()))
        peak = (quant.get("memory") or {}).get("total") or {}
        if peak:
            lines.append("Quantizer peak memory (GB): " + ", ".join(f"{k.removesuffix('_gb')} {v:.2f}" for k, v in peak.items()))
    llm = report["llm"]
    lines.append(f"LLM: {llm['calls']} calls, {llm['input_tokens']} input / {llm['output_tokens']} output tokens")
    return "\n".join(lines) + "\n"


def reporter(state: PortState) -> dict:
    """Writes report.json and report.md; the final status stays in the state."""
    run_dir = Path(state["run_dir"])
    report = build_report(state)
    write_json(run_dir / "report.json", report)
    with atomic_path(run_dir / "report.md") as tmp:
        tmp.write_text(render_markdown(report))
    return {"status": report["status"]}
