"""Render templates/cpp plus the chosen skills into a run's `cpp/` CMake project."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Mapping
from pathlib import Path

import jinja2

from omnimodel.atomic import atomic_dir
from omnimodel.errors import ConfigError
from omnimodel.ggufio import names
from omnimodel.paths import skills_dir, templates_dir
from omnimodel.skills import Skill, load_skill

log = logging.getLogger(__name__)

MODEL_SOURCE = "omnimodel_policy.cpp"
HEADER = "omnimodel_policy.h"
CLI_SOURCE = "policy_cli.cpp"
LIBRARY = "libomnimodel_policy.so"
CLI_BINARY = "policy_cli"



def _env(root: Path) -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(root)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        autoescape=False,
    )


def _render_skill(skill: Skill) -> str:
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, keep_trailing_newline=True, autoescape=False)
    try:
        text = skill.template_path.read_text(encoding="utf-8")
        return env.from_string(text).render(skill=skill).rstrip() + "\n"
    except jinja2.TemplateError as exc:
        raise ConfigError(f"skill {skill.name}: template does not render ({exc}); fix {skill.path}") from None


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


def _slot_entry(skill: Skill) -> dict:
    from omnimodel.codegen.slots import slot_by_skill

    header = slot_by_skill(skill.name).header
    return {"name": f"llm:{skill.name}", "version": "-", "provenance": f"written by the agent in cpp/{header}",
            "code": f'#include "{header}"\n'}


def render_sources(skills: list[Skill], model_name: str = "openvla-oft", slots: Iterable[str] = ()) -> dict[str, str]:
    """File name -> text of the generated project; skills named in `slots` become an include of the agent's file."""
    env = _env(templates_dir())
    slots = set(slots)
    ctx = {
        "model_name": model_name,
        "arch": names.ARCH,
        "skills": [
            _slot_entry(s) if s.name in slots else
            {"name": s.name, "version": s.version, "provenance": s.provenance, "code": _render_skill(s)} for s in skills
        ],
    }
    return {
        "CMakeLists.txt": env.get_template("CMakeLists.txt.j2").render(**ctx),
        MODEL_SOURCE: env.get_template(MODEL_SOURCE + ".j2").render(**ctx),
    }


def render_project(
    run_dir: Path,
    skills: list[Skill],
    model_name: str = "openvla-oft",
    slots: Mapping[str, str] | None = None,
) -> Path:
    """Write `run_dir/cpp/` (CMake project, model source, C header, CLI) and return its path.

    `slots` maps a role skill to the module the agent realises in it: the model source includes
    `cpp/modules/<skill>.h`, which is kept across re-renders (a compiling stub when absent).
    """
    from omnimodel.codegen.slots import MODULES_DIR, signature, slot_by_skill, stub

    slots = dict(slots or {})
    sources = render_sources(skills, model_name, slots)
    final = Path(run_dir) / "cpp"
    with atomic_dir(final) as tmp:
        for fname, text in sources.items():
            (tmp / fname).write_text(text)
        for fname in (HEADER, CLI_SOURCE):
            shutil.copyfile(templates_dir() / fname, tmp / fname)
        if slots:
            if (final / MODULES_DIR).is_dir():
                shutil.copytree(final / MODULES_DIR, tmp / MODULES_DIR)
            for skill_name, module in slots.items():
                slot = slot_by_skill(skill_name)
                target = tmp / slot.header
                if not target.exists():
                    target.parent.mkdir(parents=True, exist_ok=True)
                    root = next((s.path.parent for s in skills if s.name == skill_name), skills_dir())
                    target.write_text(stub(slot, signature(root, slot), module))
    log.info("rendered %s with skills %s", final, ", ".join(s.name for s in skills))
    return final
