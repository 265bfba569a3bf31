"""docs/environment.md lists every OMNIMODEL_* variable the package, the scripts, the sandbox recipe and the tests read."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
ROOTS = ("omnimodel", "actquant_plugin", "scripts", "sandbox", ".ci", "tests", "templates", "benchmarks")
SUFFIXES = {".py", ".sh", ".cpp", ".h", ".j2", ""}
NAME = re.compile(r"OMNIMODEL_[A-Z0-9_]*[A-Z0-9]")


def _variables() -> dict[str, str]:
    """Variable -> first file naming it (C header guards and name prefixes built at run time left out)."""
    found: dict[str, str] = {}
    for root in ROOTS:
        for path in sorted((REPO / root).rglob("*")):
            if not path.is_file() or path.suffix not in SUFFIXES or "__pycache__" in path.parts:
                continue
            text = path.read_text(errors="replace")
            for m in NAME.finditer(text):
                name = m.group(0)
                if name.endswith("_H") or text[m.end() : m.end() + 1] in ("_", "{"):
                    continue  # an include guard, or the head of a name completed at run time
                found.setdefault(name, str(path.relative_to(REPO)))
    return found


def test_every_environment_variable_is_documented():
    doc = (REPO / "docs" / "environment.md").read_text()
    variables = _variables()
    assert "OMNIMODEL_CACHE" in variables and "OMNIMODEL_FUZZ_CASES" in variables  # the scan reaches the package and the tests
    missing = {v: where for v, where in variables.items() if f"`{v}`" not in doc}
    assert not missing, f"undocumented in docs/environment.md: {missing}"
