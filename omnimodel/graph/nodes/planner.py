"""planner: realise each module by a skill, by the architecture template's glue, or by the LLM."""

from __future__ import annotations

import json
import time
from pathlib import Path

from omnimodel import archs
from omnimodel.archs.base import Arch
from omnimodel.graph.state import PortState
from omnimodel.paths import skills_dir as default_skills_dir
from omnimodel.plan import Plan


def _param_names(records: dict[str, dict], name: str) -> list[str]:
    """Parameter names of a module and its descendants, relative to it."""
    out = []
    stack = [name]
    while stack:
        cur = stack.pop()
        rec = records[cur]
        if cur == name:
            rel = ""
        elif name == "<root>":
            rel = cur
        else:
            rel = cur[len(name) + 1 :]
        out += [f"{rel}.{p}" if rel else p for p in rec["params"]]
        stack += rec["children"]
    return sorted(out)


def make_plan(analysis: dict, skills_path: Path, arch: Arch) -> Plan:
    """Walk the module tree top-down and decide how each module is realised, by the arch's plan rules."""
    from omnimodel.skills import load_skills, match_skill

    skills = load_skills(skills_path)
    records = {r["name"]: r for r in analysis["modules"]}
    units, needs_llm, glue, unused, transforms = [], [], [], [], {}

    def ran(name: str) -> bool:
        rec = records[name]
        return rec.get("ran", True) or any(ran(c) for c in rec["children"])

    def visit(name: str) -> None:
        rec = records[name]
        if rec["cls"] in arch.unused_classes or (name != "<root>" and not ran(name)):
            unused.append(name)  # never ran on the sample (a tower's last block and final norm)
            return
        skill = match_skill(rec["cls"], _param_names(records, name), skills)
        if rec["cls"] in arch.glue_classes or name == "<root>":
            # Glue is written by the arch's graph (with a skill where one exists, e.g. a sequence
            # assembly); its children are planned on their own.
            glue.append({"name": name, "cls": rec["cls"], "skill": skill.name if skill else None})
            for child in rec["children"]:
                visit(child)
            return
        if skill is not None:
            units.append(
                {
                    "name": name,
                    "cls": rec["cls"],
                    "realised_by": f"skill:{skill.name}",
                    "skill": skill.name,
                    "skill_version": str(skill.version),
                    "cached": rec.get("cached", False),
                }
            )
            for param, entry in skill.tensor_map.items():
                transforms[f"{name}.{param}"] = {"gguf_suffix": entry.gguf, "transforms": list(entry.transforms)}
            return
        if rec["cls"] in arch.inert_classes and not rec["params"]:
            return
        if rec["cls"] in arch.graph_leaves:
            glue.append({"name": name, "cls": rec["cls"], "skill": None})
            return
        needs_llm.append({"name": name, "cls": rec["cls"], "params": _param_names(records, name), "ops": rec.get("ops", [])})

    visit("<root>")
    return Plan(
        model=analysis["model"],
        arch=arch.name,
        skills_dir=str(skills_path),
        units=units,
        glue=glue,
        needs_llm=needs_llm,
        unused=unused,
        param_transforms=transforms,
        conversion_order=["vision", "projector", "proprio_projector", "llm", "action_head"],
    )


def assign_slots(plan: Plan, analysis: dict) -> list[dict]:
    """With --llm: each module needing the LLM becomes a unit realised by the agent in its role's slot; returns those with no slot."""
    from omnimodel.codegen.slots import slot_for

    cached = {r["name"]: r.get("cached", False) for r in analysis["modules"]}
    unslotted = []
    for entry in plan.needs_llm:
        slot = slot_for(entry["name"], plan.arch)
        if slot is None:
            unslotted.append(entry)
            continue
        entry["slot"] = slot.skill
        entry["gguf_prefix"] = slot.gguf_prefix(entry["name"])
        plan.units.append(
            {
                "name": entry["name"],
                "cls": entry["cls"],
                "realised_by": "llm",
                "skill": None,
                "slot": slot.skill,
                "cached": cached.get(entry["name"], False),
            }
        )
    return unslotted


def planner(state: PortState) -> dict:
    """Writes plan.json; modules nothing covers need the LLM (a clear failure when no --llm is given)."""
    t0 = time.perf_counter()
    run_dir = Path(state["run_dir"])
    analysis = json.loads((run_dir / "analysis.json").read_text())
    skills_path = Path(state.get("skills_dir") or default_skills_dir())
    plan = make_plan(analysis, skills_path, archs.get(state["model"]))
    plan.write(run_dir)
    out: dict = {"timings": {"planner": time.perf_counter() - t0}}
    if plan.needs_llm and state.get("llm"):
        unslotted = assign_slots(plan, analysis)
        plan.write(run_dir)
        if unslotted:
            first = unslotted[0]
            message = (
                f"module {first['name']} ({first['cls']}) has no skill and no slot the agent can fill "
                f"(roles: see omnimodel/codegen/slots.py); add a skill for it (omnimodel skills add DIR)"
            )
            out.update(status="failed", failing_module=first["name"], diagnosis={"kind": "no_slot", "detail": message}, error=message)
        return out
    if plan.needs_llm and not state.get("llm"):
        first = plan.needs_llm[0]
        message = (
            f"module {first['name']} ({first['cls']}) has no skill; rerun with --llm PROVIDER:MODEL "
            f"to let the agent write it, or add a skill (omnimodel skills add DIR)"
        )
        out.update(status="failed", failing_module=first["name"], diagnosis={"kind": "needs_llm", "detail": message}, error=message)
    return out
