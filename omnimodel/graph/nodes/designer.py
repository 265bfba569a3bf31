"""C++ designer: render templates/cpp with the plan's skills into the run's cpp/ project."""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path

from omnimodel import archs
from omnimodel.graph.state import PortState
from omnimodel.plan import Plan


def designer(state: PortState) -> dict:
    """Writes cpp/ (CMake project, model source, C API header, CLI)."""
    from omnimodel.codegen.render import choose_skills, render_project

    t0 = time.perf_counter()
    run_dir = Path(state["run_dir"])
    plan = Plan.read(run_dir)
    if os.environ.get("OMNIMODEL_TEST_KILL_IN") == "designer":  # crash-recovery test hook
        signal.raise_signal(signal.SIGKILL)
    glue = [g["skill"] for g in plan.glue if g.get("skill")]
    # A module the agent realises fills its role's slot: the role skill's place in the source
    # becomes an include of cpp/modules/<role skill>.h (see omnimodel/codegen/slots.py).
    slots = {u["slot"]: u["name"] for u in plan.llm_units()}
    wanted = list(dict.fromkeys([*(u.get("skill") or u["slot"] for u in plan.units), *glue]))
    order = archs.get(state["model"]).graph_skills()
    skills = choose_skills(_ordered(wanted, order), skills_root=Path(plan.skills_dir))
    render_project(run_dir, skills, state["model"], model_name=plan.model, slots=slots, skills_root=Path(plan.skills_dir))
    key = "designer" if not state.get("iteration") else f"designer.{state['iteration']}"
    return {"timings": {key: time.perf_counter() - t0}}


def _ordered(wanted: list[str], order: tuple[str, ...]) -> list[str]:
    """The arch graph's skills in its emission order, then any others."""
    known = [s for s in order if s in wanted]
    return known + [s for s in wanted if s not in known]
