"""agent: the LLM writes the C++ of each module no skill covers, in its role's slot, until parity or budget.

Per module (one per slot): the LLM gets the module's PyTorch source, traced ops with shapes, the
role's signature and weight names; its tools write cpp/modules/<slot>.h, build in the sandbox and
run the module's parity test on its cached tensors. After the reflector rejects an LLM-written
module, the agent is called again with the diagnosis (bounded by iterations and the LLM budget).
A spent budget ends the run: status failed, the last build / parity result as the diagnosis.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

from omnimodel.analysis import module_params, write_json
from omnimodel.graph.state import PortState
from omnimodel.plan import Plan

SYSTEM = """You port PyTorch modules of a robot policy to GGML C++ for OmniModel.cpp.
You write exactly one graph-building function per task, in the file the task names (inside cpp/), with the
signature given. The surrounding model source already defines: to_f32(ctx, t) (cast to F32),
linear(ctx, x, w, b) (y = W x + b, b may be nullptr), layer_norm(ctx, x, w, b, eps), attention(...),
omni_error, and the weights struct of the role, whose get("name") returns the GGUF tensor of that parameter.
GGML shapes are ne order (the reverse of PyTorch): a Linear weight [out, in] in PyTorch is ne = {in, out}.
Read every size from the tensors (t->ne[...]); never hard-code sizes: the function becomes a reusable skill.
Use ggml_api to check a function's signature and search_kb to find similar code (skills/).
Work loop: write_cpp, build, run_parity; fix compile errors and parity misses until run_parity says
PARITY PASS; then answer with one short line and no tool call."""


def _budget(state: PortState, usage: dict):
    from omnimodel.llm import Budget

    cfg = dict(state.get("llm_budget") or {})

    def pick(key: str, env: str, default, cast):
        value = cfg.get(key, os.environ.get(env))
        return default if value in (None, "") else cast(value)

    return Budget(
        max_calls=pick("max_calls", "OMNIMODEL_LLM_MAX_CALLS", 40, int),
        max_tokens=pick("max_tokens", "OMNIMODEL_LLM_MAX_TOKENS", 2_000_000, int),
        max_wall_s=pick("max_seconds", "OMNIMODEL_LLM_MAX_SECONDS", 3600.0, float),
        clock=time.time,
        started=float(usage.get("started") or time.time()),
    )


def _task(unit: dict, sig: str, prefix: str, params: dict, tools, analysis: dict) -> str:
    """The first message of a module's session."""
    from omnimodel.agent.port_tools import module_source, module_trace
    from omnimodel.codegen.slots import slot_by_skill

    header = slot_by_skill(unit["slot"]).header
    weights = "\n".join(f'  W.get("{k}"): {prefix}{k}, PyTorch shape {v}' for k, v in sorted(params.items()))
    return (
        f"Module {unit['name']} (class {unit['cls']}) fills the slot {unit['slot']}.\n"
        f'Write cpp/{header} (write_cpp path "{header}") defining exactly:\n  {sig}\n'
        f"Weights of this module:\n{weights}\n"
        f'Check it with run_parity module "{unit["name"]}".\n\n'
        f"PyTorch source:\n```python\n{module_source(tools.checkpoint, unit['name'])}```\n"
        f"Traced (module: in -> out shapes; ops; params):\n{module_trace(analysis, unit['name'])}\n"
    )


def _feedback_task(unit: dict, diagnosis: dict, run_dir: Path) -> str:
    """The message that sends a rejected module back to the agent (the reflector's diagnosis)."""
    from omnimodel.codegen.slots import slot_by_skill

    header = slot_by_skill(unit["slot"]).header
    path = run_dir / "cpp" / header
    code = path.read_text(encoding="utf-8") if path.is_file() else "(missing)"
    detail = str(diagnosis.get("detail", ""))
    return (
        f"The validator rejected module {unit['name']} (class {unit['cls']}): {diagnosis.get('kind')}.\n"
        f'Fix cpp/{header}, then build and run_parity module "{unit["name"]}" until PARITY PASS.\n'
        f"Current cpp/{header}:\n```cpp\n{code}```\n"
        f"Details:\n{detail}\n"
    )


def agent(state: PortState) -> dict:
    """Run one agent session per LLM-realised slot (all of them first, then the one the reflector names)."""
    from omnimodel.agent.loop import run_agent
    from omnimodel.agent.port_tools import PortTools
    from omnimodel.agent.providers import run_provider
    from omnimodel.agent.tools import ToolBox
    from omnimodel.codegen.slots import signature, slot_by_skill
    from omnimodel.errors import LLMError
    from omnimodel.llm import Accounting

    t0 = time.perf_counter()
    run_dir = Path(state["run_dir"])
    plan = Plan.read(run_dir)
    analysis = json.loads((run_dir / "analysis.json").read_text())
    usage = dict(state.get("llm_usage") or {})
    usage.setdefault("started", time.time())
    accounting = Accounting(
        usage.get("calls", 0), usage.get("input_tokens", 0), usage.get("output_tokens", 0)
    )
    provider = run_provider(state["llm"], run_dir, _budget(state, usage), accounting)
    tools = PortTools(
        run_dir,
        state["checkpoint"],
        state.get("sandbox", "auto"),
        state.get("backend", "cpu"),
        state.get("quant", "f32"),
    )
    box = ToolBox(run_dir, build=tools.build, run_parity=tools.run_parity, show_module=tools.show_module)

    diagnosis = state.get("diagnosis") or {}
    feedback_for = diagnosis.get("module") if diagnosis.get("redo") == "agent" else None
    units, seen_slots = [], set()
    for unit in plan.llm_units():
        if unit["slot"] in seen_slots:
            continue
        if feedback_for and unit["slot"] != plan.slot_of(feedback_for):
            continue
        seen_slots.add(unit["slot"])
        units.append(unit)

    iteration = state.get("iteration", 0)
    sessions_file = run_dir / "agent" / "sessions.json"
    sessions = json.loads(sessions_file.read_text()) if sessions_file.exists() else []
    out: dict = {}
    for unit in units:
        slot = slot_by_skill(unit["slot"])
        if feedback_for:
            task = _feedback_task(unit, diagnosis, run_dir)
        else:
            sig = signature(Path(plan.skills_dir), slot)
            task = _task(
                unit,
                sig,
                slot.gguf_prefix(unit["name"]),
                module_params(analysis, unit["name"]),
                tools,
                analysis,
            )
        try:
            result = run_agent(
                provider, box, SYSTEM, task, max_turns=int(os.environ.get("OMNIMODEL_AGENT_MAX_TURNS", "30"))
            )
        except LLMError as exc:  # a provider failure or a replay that diverged: the run fails naming it
            message = str(exc).splitlines()[0]
            out.update(
                status="failed",
                failing_module=unit["name"],
                diagnosis={"kind": "llm_error", "detail": message, "last_check": tools.last_check},
                error=message,
            )
            break
        sessions.append(
            {
                "iteration": iteration,
                "module": unit["name"],
                "slot": unit["slot"],
                "outcome": result.outcome,
                "text": result.text,
                "error": result.error,
                "tool_calls": result.tool_calls,
                "checks": list(tools.checks),
                "messages": [m.to_dict() for m in result.messages],
            }
        )
        tools.checks.clear()
        if result.outcome in ("budget", "refused"):
            last = tools.last_check or "no build or parity result yet"
            detail = f"{result.error}; last diagnosis of {unit['name']}: {last}"
            out.update(
                status="failed",
                failing_module=unit["name"],
                diagnosis={
                    "kind": "llm_budget" if result.outcome == "budget" else "llm_refused",
                    "detail": detail,
                    "last_check": last,
                },
                error=f"the agent stopped on {unit['name']}: {result.error}",
            )
            break
    (run_dir / "agent").mkdir(exist_ok=True)
    write_json(sessions_file, sessions)
    usage.update(provider.accounting.as_report())
    out["llm_usage"] = usage
    out.setdefault("status", "running")
    key = "agent" if not iteration else f"agent.{iteration}"
    out["timings"] = {key: time.perf_counter() - t0}
    return out

