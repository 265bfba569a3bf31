"""plan.json: how each module of the model is realised (skill, glue, LLM); the one reader and writer."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

from omnimodel.errors import PipelineError

FILE = "plan.json"


def require(data: dict, key: str, kind: type | tuple[type, ...], where: str) -> object:
    """data[key] when it is of `kind`; else a one-line PipelineError naming the file and the key."""
    if not isinstance(data, dict):
        raise PipelineError(f"{where}: expected a JSON object, got {type(data).__name__}; re-run the stage that writes it")
    if key not in data:
        raise PipelineError(f"{where}: key {key!r} is missing; re-run the stage that writes it (or start a new port)")
    value = data[key]
    if not isinstance(value, kind):
        want = kind.__name__ if isinstance(kind, type) else " or ".join(k.__name__ for k in kind)
        raise PipelineError(f"{where}: key {key!r} is {type(value).__name__}, expected {want}; re-run the stage that writes it")
    return value


def require_entries(entries: list, keys: tuple[str, ...], where: str) -> None:
    """Every entry of a list is an object with these string keys."""
    for i, entry in enumerate(entries):
        for key in keys:
            require(entry, key, str, f"{where}[{i}]")


@dataclass
class Plan:
    """plan.json's content: units (modules realised by a skill or the LLM), glue, modules that need the LLM."""

    model: str
    arch: str
    skills_dir: str
    units: list[dict] = field(default_factory=list)  # name, cls, realised_by (skill:<name> | llm), skill, slot, cached
    glue: list[dict] = field(default_factory=list)  # name, cls, skill (or None)
    needs_llm: list[dict] = field(default_factory=list)  # name, cls, params, ops (+ slot, gguf_prefix with --llm)
    unused: list[str] = field(default_factory=list)
    param_transforms: dict[str, dict] = field(default_factory=dict)
    conversion_order: list[str] = field(default_factory=list)

    @staticmethod
    def read(path: str | Path) -> Plan:
        """The plan in `path` (a plan.json or a run directory), schema-checked."""
        path = Path(path)
        path = path / FILE if path.is_dir() else path
        if not path.is_file():
            raise PipelineError(f"{path}: no plan; run the planner first (resume the port or start a new one)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise PipelineError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); re-run the planner") from None
        return Plan.from_json(data, str(path))

    @staticmethod
    def from_json(data: dict, where: str = FILE) -> Plan:
        """A plan from its JSON object; PipelineError naming `where` and the key on a wrong schema."""
        for key in ("model", "arch", "skills_dir"):
            require(data, key, str, where)
        for key in ("units", "glue", "needs_llm", "unused", "conversion_order"):
            require(data, key, list, where)
        require(data, "param_transforms", dict, where)
        require_entries(data["units"], ("name", "cls", "realised_by"), f"{where}: units")
        require_entries(data["glue"], ("name", "cls"), f"{where}: glue")
        require_entries(data["needs_llm"], ("name", "cls"), f"{where}: needs_llm")
        names = {f for f in Plan.__dataclass_fields__}
        return Plan(**{k: v for k, v in data.items() if k in names})

    def write(self, path: str | Path) -> Path:
        """Write plan.json (into `path` when it is a run directory); returns the file."""
        from omnimodel.analysis import write_json

        path = Path(path)
        path = path / FILE if path.is_dir() else path
        write_json(path, self.to_json())
        return path

    def to_json(self) -> dict:
        """The on-disk form (the keys plan.json has always had)."""
        return asdict(self)

    def llm_units(self) -> list[dict]:
        """Units the agent writes."""
        return [u for u in self.units if u.get("realised_by") == "llm"]

    def realised_by(self) -> dict[str, str]:
        """Module name -> how it is realised."""
        return {u["name"]: u["realised_by"] for u in self.units}

    def skills_used(self) -> list[str]:
        """Skills of the units and the glue, sorted."""
        return sorted({u["skill"] for u in self.units if u.get("skill")} | {g["skill"] for g in self.glue if g.get("skill")})

    def slot_of(self, module: str) -> str | None:
        """The slot of an LLM-realised module, or None."""
        return next((u.get("slot") for u in self.units if u["name"] == module), None)
