"""validation.json: per-module and end-to-end parity of the native build; the one reader and writer."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from omnimodel.errors import PipelineError
from omnimodel.plan import require

FILE = "validation.json"


@dataclass
class Validation:
    """validation.json's content; build_error / run_error are on disk only when set."""

    quant: str
    sandbox: str
    reference: str  # the reference directory, relative to the run dir
    modules: list[dict] = field(default_factory=list)  # name, realised_by, threshold, cosine, max_abs_err, passed, ...
    end_to_end: dict = field(default_factory=dict)  # action_cosine, action_max_abs_err, limit_max_abs, passed, ...
    build_error: str | None = None
    run_error: str | None = None

    @staticmethod
    def read(path: str | Path) -> Validation:
        """The validation in `path` (a validation.json or a run directory), schema-checked."""
        path = Path(path)
        path = path / FILE if path.is_dir() else path
        if not path.is_file():
            raise PipelineError(f"{path}: no validation; run the validator first (resume the port)")
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise PipelineError(f"{path}: not valid JSON ({exc.msg} at line {exc.lineno}); re-run the validator") from None
        return Validation.from_json(data, str(path))

    @staticmethod
    def read_if_present(run_dir: str | Path) -> Validation | None:
        """The run's validation, or None before the validator ran."""
        path = Path(run_dir) / FILE
        return Validation.read(path) if path.exists() else None

    @staticmethod
    def from_json(data: dict, where: str = FILE) -> Validation:
        """A validation from its JSON object; PipelineError naming `where` and the key on a wrong schema."""
        for key in ("quant", "sandbox", "reference"):
            require(data, key, str, where)
        require(data, "modules", list, where)
        require(data, "end_to_end", dict, where)
        for i, m in enumerate(data["modules"]):
            require(m, "name", str, f"{where}: modules[{i}]")
            require(m, "passed", bool, f"{where}: modules[{i}]")
        for key in ("build_error", "run_error"):
            if data.get(key) is not None:
                require(data, key, str, where)
        names = set(Validation.__dataclass_fields__)
        return Validation(**{k: v for k, v in data.items() if k in names})

    def to_json(self) -> dict:
        """The on-disk form."""
        out = {"quant": self.quant, "sandbox": self.sandbox, "reference": self.reference}
        for key in ("build_error", "run_error"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        out["modules"] = self.modules
        out["end_to_end"] = self.end_to_end
        return out

    def write(self, path: str | Path) -> Path:
        """Write validation.json (into `path` when it is a run directory); returns the file."""
        from omnimodel.analysis import write_json

        path = Path(path)
        path = path / FILE if path.is_dir() else path
        write_json(path, self.to_json())
        return path

    @property
    def passed(self) -> bool:
        """Every module and the end-to-end check passed, and the build ran."""
        return (
            bool(self.modules)
            and all(m["passed"] for m in self.modules)
            and bool(self.end_to_end.get("passed", False))
            and not self.run_error
            and not self.build_error
        )

    def first_failing(self, order: list[str]) -> dict | None:
        """The failing module earliest in `order` (the plan's unit order), or None."""
        rank = {name: i for i, name in enumerate(order)}
        failing = sorted((m for m in self.modules if not m.get("passed")), key=lambda m: rank.get(m["name"], len(rank)))
        return failing[0] if failing else None

    def worst_module(self) -> dict | None:
        """The module with the lowest cosine (None when no module has one)."""
        scored = [m for m in self.modules if isinstance(m.get("cosine"), float)]
        return min(scored, key=lambda m: m["cosine"]) if scored else None
