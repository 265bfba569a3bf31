"""Skill learning: after a port ends ok, each module the agent wrote becomes a skill folder.

The skill is the agent's function as the template (it reads its sizes from the tensors, so it
generalises over sizes), `applies_to` = the module's class and parameter names, a tensor map, a
test vector (the module's weights from model.gguf, its cached input and PyTorch output, the
runtime metadata), and provenance naming the run. It must pass its own parity test, built in the
sandbox from a project that uses the new skill, before `add_skill` installs it (and re-indexes the
knowledge base). Modules over MAX_VECTOR_PARAMS parameters are not learned (their vector would
not be small); the reason is recorded in learned.json.
"""

from __future__ import annotations

import datetime
import json
import logging
import re
import shutil
from pathlib import Path

import numpy as np
import yaml

from omnimodel.analysis import module_params, read_reference, write_json

log = logging.getLogger(__name__)

MAX_VECTOR_PARAMS = 1_000_000


def skill_name(slot: str, cls: str) -> str:
    """`proprio_projector` + `GeluLayerScaleProprio` -> `proprio_projector_gelu_layer_scale_proprio`."""
    snake = re.sub(r"(?<=[a-z0-9])(?=[A-Z])", "_", cls).lower()
    return re.sub(r"[^a-z0-9_]", "_", f"{slot}_{snake}")[:60].strip("_")




def write_skill_folder(run_dir: Path, unit: dict, state: dict, folder: Path, version: int) -> dict:
    """Write the candidate skill for one LLM-realised unit into `folder`; returns its summary."""
    from omnimodel import archs
    from omnimodel.codegen.slots import function_name, signature, slot_by_skill
    from omnimodel.codegen.testvectors import write_vector
    from omnimodel.ggufio import names
    from omnimodel.models.preprocess import select_stats
    from omnimodel.quant_sim import read_gguf_dequantized

    plan = json.loads((run_dir / "plan.json").read_text())
    analysis = json.loads((run_dir / "analysis.json").read_text())
    slot = slot_by_skill(unit["slot"])
    module, cls = unit["name"], unit["cls"]
    params = module_params(analysis, module)
    code = (run_dir / "cpp" / slot.header).read_text(encoding="utf-8")
    sig = signature(Path(plan["skills_dir"]), slot)
    name = skill_name(unit["slot"], cls)
    prefix = slot.gguf_prefix(module)
    folder.mkdir(parents=True, exist_ok=True)
    description = f"{cls} in the {unit['slot']} slot: learned from run {run_dir.name} (written by the agent, parity-checked)."
    provenance = {
        "learned_from_run": run_dir.name,
        "run_dir": str(run_dir),
        "model": plan.get("model"),
        "module": module,
        "llm": state.get("llm"),
        "date": datetime.date.today().isoformat(),
    }
    front = {
        "name": name,
        "description": description,
        "applies_to": [{"class": cls, "has_params": sorted(params)}],
        "provenance": provenance,
        "version": version,
        "role": unit["slot"],
    }
    body = (
        f"# {name}\n\n{description}\n\nGraph function (C++, `template.cpp.j2`, the slot {unit['slot']}'s signature):\n\n"
        f'```cpp\n{sig}\n```\n\nWeights are read by name from the role\'s tensors (`W.get("...")`, GGUF prefix '
        f"`{slot.prefix}`); sizes come from the tensors. `test_vector.gguf` holds the module of run {run_dir.name}: "
        f"its weights, `in.0` and the PyTorch output `out`.\n"
    )
    (folder / "SKILL.md").write_text(
        "---\n" + yaml.safe_dump(front, sort_keys=False) + "---\n" + body, encoding="utf-8"
    )
    (folder / "template.cpp.j2").write_text(
        "{% raw %}" + code.rstrip() + "\n{% endraw %}\n", encoding="utf-8"
    )
    tmap = {}
    for param in sorted(params):
        target = names.gguf_names(f"{module}.{param}", plan.get("arch"))[0]
        # the gguf column is the suffix under the module's role prefix, as in the hand-written skills
        tmap[param] = {"gguf": target[len(prefix) :] if target.startswith(prefix) else target, "transforms": []}
    (folder / "tensor_map.yaml").write_text(yaml.safe_dump(tmap, sort_keys=False), encoding="utf-8")

    ckpt = Path(state["checkpoint"])
    arch = archs.for_checkpoint(ckpt)
    cfg = arch.read_config(ckpt)
    _, stats = select_stats(
        json.loads((ckpt / "dataset_statistics.json").read_text()), state.get("unnorm_key")
    )
    weights = {k: v for k, v in read_gguf_dequantized(run_dir / "model.gguf").items() if k.startswith(prefix)}
    ref = read_reference(run_dir / "reference" / f"{module}.gguf")
    inputs = [
        ref[k] for k in sorted((k for k in ref if k.startswith("in.")), key=lambda k: int(k.split(".")[1]))
    ]
    write_vector(
        folder / "test_vector.gguf", module, cls, weights, arch.runtime_metadata(cfg, stats), inputs, ref["out"],
        arch_name=arch.name,
    )
    return {
        "name": name,
        "module": module,
        "class": cls,
        "function": function_name(sig),
        "params": sum(int(np.prod(s)) for s in params.values()),
    }


def check_skill(run_dir: Path, folder: Path, plan: dict, state: dict, work: Path) -> tuple[bool, str]:
    """Render a project that uses the candidate skill, build it in the sandbox, run its test vector; (passed, detail)."""
    from omnimodel.agent.port_tools import compiler_errors
    from omnimodel.codegen.render import choose_skills, render_project
    from omnimodel.parity import COSINE_THRESHOLD, compare
    from omnimodel.sandbox import get_sandbox
    from omnimodel.sandbox.cmake_project import compile_and_run_cmake_project
    from omnimodel.skills import load_skill
    from omnimodel.toolchain import ensure_ggml_build

    candidate = load_skill(folder)
    role = yaml.safe_load((folder / "SKILL.md").read_text().split("---")[1])["role"]
    from omnimodel.graph.nodes.designer import _ordered

    glue = [g["skill"] for g in plan["glue"] if g.get("skill")]
    wanted = [u.get("skill") or u["slot"] for u in plan["units"]] + glue
    wanted = [w for w in dict.fromkeys(wanted) if w != role]
    from omnimodel import archs

    order = archs.get(plan["arch"]).graph_skills()
    skills = choose_skills(_ordered(wanted, order), skills_root=Path(plan["skills_dir"])) + [candidate]
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    render_project(work, skills, plan["arch"], model_name=plan["model"], skills_root=Path(plan["skills_dir"]))
    # inputs and outputs live under the build folder: the sandbox mounts it read-write
    ref_dir, out_dir = (work / "build" / "vector_ref").resolve(), (work / "build" / "vector_out").resolve()
    ref_dir.mkdir(parents=True)
    vector = ref_dir / "vector.gguf"
    shutil.copyfile(folder / "test_vector.gguf", vector)
    box = get_sandbox(state.get("sandbox", "auto"))
    ggml = ensure_ggml_build(state.get("backend", "cpu"), box)
    result = compile_and_run_cmake_project(
        work / "cpp",
        work / "build",
        box,
        ggml,
        run=["policy_cli", "validate", str(vector), str(ref_dir), str(out_dir)],
        configure_args=[f"-DGGML_DIR={ggml.prefix}"],
        run_timeout_s=600,
        memory_mb=8192,
    )
    failed = result.failed_step()
    if failed:
        step, res = failed
        return False, f"{step} failed: {compiler_errors(res.stdout + chr(10) + res.stderr)[-1500:]}"
    module = read_reference(vector).get("out")
    outs = list(out_dir.glob("*.gguf"))
    if len(outs) != 1:
        return False, f"the test vector produced {len(outs)} outputs"
    p = compare(read_reference(outs[0])["out"], module)
    ok = p.passed(COSINE_THRESHOLD["f32"])
    return ok, f"test vector: cosine {p.cosine:.7f}, max abs err {p.max_abs_err:.3g}"


def learn_skills(run_dir: Path, state: dict) -> list[dict]:
    """Turn each LLM-realised slot of an ok run into an installed skill; returns what happened per module."""
    from omnimodel.skills import SkillError, add_skill, load_skills

    run_dir = Path(run_dir)
    plan = json.loads((run_dir / "plan.json").read_text())
    skills_root = Path(plan["skills_dir"])
    existing = {s.name: s for s in load_skills(skills_root)}
    learned, seen = [], set()
    for unit in plan["units"]:
        if unit.get("realised_by") != "llm" or unit["slot"] in seen:
            continue
        seen.add(unit["slot"])
        name = skill_name(unit["slot"], unit["cls"])
        version = int(re.sub(r"\D", "", existing[name].version) or 0) + 1 if name in existing else 1
        folder = run_dir / "learn" / name / "skill"
        shutil.rmtree(folder, ignore_errors=True)
        entry = {"module": unit["name"], "skill": name, "version": version}
        try:
            info = write_skill_folder(run_dir, unit, state, folder, version)
            if info["params"] > MAX_VECTOR_PARAMS:
                entry.update(
                    status="skipped", reason=f"{info['params']} parameters: too large for a small test vector"
                )
                learned.append(entry)
                continue
            passed, detail = check_skill(run_dir, folder, plan, state, run_dir / "learn" / name / "check")
            entry["parity"] = detail
            if not passed:
                entry.update(status="rejected", reason="the skill failed its own parity test")
                learned.append(entry)
                continue
            installed = add_skill(folder, skills_root, replace=name in existing)
            entry.update(status="added", path=str(installed.path))
        except (SkillError, OSError, KeyError) as exc:
            entry.update(status="error", reason=str(exc).splitlines()[0])
        learned.append(entry)
        log.info("learned skill %s: %s", name, entry["status"])
    write_json(run_dir / "learned.json", learned)
    return learned
