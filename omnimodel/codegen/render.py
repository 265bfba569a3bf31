"""Render templates/cpp plus the chosen skills into a run's `cpp/` CMake project."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import jinja2

from omnimodel.atomic import atomic_dir
from omnimodel.errors import ConfigError
from omnimodel.paths import skills_dir, templates_dir
from omnimodel.skills import Skill, load_skill

log = logging.getLogger(__name__)

MODEL_SOURCE = "omnimodel_policy.cpp"  # the arch's graph with its skills
HEADER = "omnimodel_policy.h"
CLI_SOURCE = "policy_cli.cpp"
NAMES_HEADER = "omni_names.h"
CORE_FILES = ("omni_core.h", "omni_core.cpp", "omni_text.cpp", HEADER, CLI_SOURCE)  # copied as they are
LIBRARY = "libomnimodel_policy.so"
CLI_BINARY = "policy_cli"
GRAPH_MARKER = "// @graph"  # a skill template's weights (struct + loader) come before it, its graph function after


def _env(root: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _render_skill(skill: Skill) -> tuple[str, str]:
    """(weights part, graph part) of a skill's rendered template; no marker: all graph."""
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    try:
        text = skill.template_path.read_text(encoding="utf-8")
        code = env.from_string(text).render(skill=skill)
    except jinja2.TemplateError as exc:
        raise ConfigError(f"skill {skill.name}: template does not render ({exc}); fix {skill.path}") from None
    weights, sep, graph = code.partition(GRAPH_MARKER + "\n")
    if not sep:
        weights, graph = "", code
    return weights.rstrip() + "\n" if weights.strip() else "", graph.rstrip() + "\n"


def choose_skills(
    wanted: Iterable[str],
    skills_root: Path | None = None,
    overrides: Mapping[str, Path] | None = None,
) -> list[Skill]:
    """The skills to emit, in order; `overrides` maps a skill name to another folder (a test copy)."""
    root = Path(skills_root) if skills_root else skills_dir()
    chosen = []
    for name in wanted:
        folder = Path(overrides[name]) if overrides and name in overrides else root / name
        if not (folder / "SKILL.md").is_file():
            raise ConfigError(f"no skill {name!r} at {folder}: the generated model source needs it")
        chosen.append(load_skill(folder))
    return chosen


def _slot_entry(skill: Skill, arch) -> dict:
    from omnimodel.codegen.slots import slot_by_skill

    header = slot_by_skill(skill.name, arch).header
    return {"name": f"llm:{skill.name}", "version": "-", "provenance": f"written by the agent in cpp/{header}",
            "code": f'#include "{header}"\n'}


def _arch(arch):
    from omnimodel import archs

    return archs.get(arch) if isinstance(arch, str) else arch


def render_sources(
    skills: list[Skill], arch, model_name: str | None = None, slots: Iterable[str] = (), skills_root: Path | None = None
) -> dict[str, str]:
    """File name -> text of the generated files: the arch's graph with its skills, the name header, CMakeLists.

    Every role skill of the arch graph contributes its weights (struct + loader) even when another
    skill or the agent realises its graph function; a skill named in `slots` becomes an include of
    the agent's file.
    """
    from omnimodel.codegen.names_header import header_text

    arch = _arch(arch)
    slots = set(slots)
    root = Path(skills_root) if skills_root else skills_dir()
    by_name = {s.name: s for s in skills}
    weights = []
    for name in arch.graph_skills():
        skill = by_name.get(name) or (load_skill(root / name) if (root / name / "SKILL.md").is_file() else None)
        if skill is not None:
            part = _render_skill(skill)[0]
            if part:
                weights.append({"name": f"{skill.name} weights", "version": skill.version, "provenance": skill.provenance, "code": part})
    entries = []
    for s in skills:
        if s.name in slots:
            entries.append(_slot_entry(s, arch))
        else:
            entries.append({"name": s.name, "version": s.version, "provenance": s.provenance, "code": _render_skill(s)[1]})
    ctx = {"model_name": model_name or arch.name, "arch": arch.name, "skills": weights + entries}
    graph = arch.graph_template()
    try:
        # loaded from the archs folder, so a graph may include a sibling arch's shared pieces
        source = _env(graph.parent.parent).get_template(f"{graph.parent.name}/{graph.name}").render(**ctx)
    except jinja2.TemplateError as exc:
        raise ConfigError(f"arch {arch.name}: graph template {graph} does not render ({exc})") from None
    keys, tensors = arch.name_table()
    return {
        "CMakeLists.txt": _env(templates_dir()).get_template("CMakeLists.txt.j2").render(**ctx),
        MODEL_SOURCE: source,
        NAMES_HEADER: header_text(arch.name, keys, tensors),
    }


def render_project(
    run_dir: Path,
    skills: list[Skill],
    arch,
    model_name: str | None = None,
    slots: Mapping[str, str] | None = None,
    skills_root: Path | None = None,
) -> Path:
    """Write `run_dir/cpp/` (CMake project, the shared core, the arch's graph, names header, C header, CLI).

    `arch` is an Arch or its registered name. `slots` maps a role skill to the module the agent
    realises in it: the model source includes `cpp/modules/<skill>.h`, which is kept across
    re-renders (a compiling stub when absent).
    """
    from omnimodel.codegen.slots import MODULES_DIR, signature, slot_by_skill, stub

    slots = dict(slots or {})
    arch = _arch(arch)
    sources = render_sources(skills, arch, model_name, slots, skills_root)
    final = Path(run_dir) / "cpp"
    with atomic_dir(final) as tmp:
        for fname, text in sources.items():
            (tmp / fname).write_text(text)
        for fname in CORE_FILES:
            shutil.copyfile(templates_dir() / fname, tmp / fname)
        if slots:
            if (final / MODULES_DIR).is_dir():
                shutil.copytree(final / MODULES_DIR, tmp / MODULES_DIR)
            for skill_name, module in slots.items():
                slot = slot_by_skill(skill_name, arch)
                target = tmp / slot.header
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    root = next((s.path.parent for s in skills if s.name == skill_name), skills_dir())
                    target.write_text(stub(slot, signature(root, slot), module))
    log.info("rendered %s with skills %s", final, ", ".join(s.name for s in skills))
    return final
