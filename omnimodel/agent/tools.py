"""The agent's tools: JSON schemas for the LLM and size-bounded executors scoped to one run directory.

File tools read anything inside the run directory and write only inside its `cpp/`. Tools that
need the port pipeline (build, parity test, module source and traced ops) are callables the
caller injects; without one the tool answers that it is not available.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omnimodel.atomic import atomic_path
from omnimodel.errors import OmniError
from omnimodel.llm.base import ToolCall, ToolSpec
from omnimodel.llm.budget import BudgetExceeded
from omnimodel.paths import knowledge_base_dir

log = logging.getLogger(__name__)

MAX_RESULT_CHARS = 12_000
MAX_WRITE_CHARS = 200_000
CPP_SUFFIXES = (".cpp", ".cc", ".c", ".h", ".hpp", ".cu", ".txt", ".cmake")


class ToolFailure(OmniError):
    """A tool call the model got wrong (bad path, missing argument); returned to it as an error result."""


@dataclass(frozen=True)
class ToolResult:
    """What goes back to the model for one call."""

    content: str
    is_error: bool = False


def bound(text: str, limit: int = MAX_RESULT_CHARS) -> str:
    """`text` cut to `limit` characters, keeping the head and the tail (errors often sit at the end)."""
    if len(text) <= limit:
        return text
    head = limit * 2 // 3
    tail = limit - head
    return f"{text[:head]}\n[... {len(text) - limit} characters cut ...]\n{text[-tail:]}"


def _schema(properties: dict[str, Any], required: list[str]) -> dict[str, Any]:
    return {"type": "object", "properties": properties, "required": required, "additionalProperties": False}


TOOL_SPECS: dict[str, ToolSpec] = {
    spec.name: spec
    for spec in (
        ToolSpec(
            "read_file",
            "Read a text file of the run directory (analysis.json, plan.json, cpp/..., build logs). "
            "Long files come back in pieces: pass offset to continue.",
            _schema(
                {
                    "path": {"type": "string", "description": "Path relative to the run directory."},
                    "offset": {"type": "integer", "minimum": 0, "description": "First character to return."},
                },
                ["path"],
            ),
        ),
        ToolSpec(
            "write_cpp",
            "Create or overwrite a C++ source file inside the run's cpp/ folder.",
            _schema(
                {
                    "path": {
                        "type": "string",
                        "description": "Path relative to cpp/, e.g. modules/film_mlp.cpp.",
                    },
                    "content": {"type": "string", "description": "The whole file."},
                },
                ["path", "content"],
            ),
        ),
        ToolSpec(
            "patch_cpp",
            "Replace one exact, unique piece of text in a file inside cpp/ (include enough context to be unique).",
            _schema(
                {
                    "path": {"type": "string", "description": "Path relative to cpp/."},
                    "old": {"type": "string", "description": "Text to replace; must occur exactly once."},
                    "new": {"type": "string", "description": "Replacement text."},
                },
                ["path", "old", "new"],
            ),
        ),
        ToolSpec(
            "search_kb",
            "Ranked search over skills, the GGML API notes, converted models and this run's C++ sources.",
            _schema(
                {
                    "query": {"type": "string", "description": "Words or a symbol name."},
                    "limit": {"type": "integer", "minimum": 1, "maximum": 20},
                },
                ["query"],
            ),
        ),
        ToolSpec(
            "ggml_api",
            "Show the GGML API notes (signature + comment) for exact function names, e.g. ggml_mul_mat.",
            _schema(
                {"names": {"type": "array", "items": {"type": "string"}, "minItems": 1, "maxItems": 20}},
                ["names"],
            ),
        ),
        ToolSpec(
            "build",
            "Build the run's cpp/ project in the sandbox; returns the compiler output (errors first).",
            _schema({}, []),
        ),
        ToolSpec(
            "run_parity",
            "Run one module on its cached inputs and compare with PyTorch: cosine and max abs error per output.",
            _schema(
                {"module": {"type": "string", "description": "Module name, e.g. action_head.model.mlp."}},
                ["module"],
            ),
        ),
        ToolSpec(
            "show_module",
            "Show a module's PyTorch source, parameter shapes and the ops it executed with their shapes.",
            _schema({"module": {"type": "string"}}, ["module"]),
        ),
    )
}


@dataclass
class ToolBox:
    """Executes tool calls for one run; the pipeline injects build/parity/module callables."""

    run_dir: Path
    build: Callable[[], str] | None = None
    run_parity: Callable[[str], str] | None = None
    show_module: Callable[[str], str] | None = None
    kb_dir: Path | None = None
    max_result_chars: int = MAX_RESULT_CHARS
    written: list[str] = field(default_factory=list)

    def specs(self, names: list[str] | None = None) -> list[ToolSpec]:
        """The tool specs to send (all, or the named ones)."""
        return [TOOL_SPECS[n] for n in (names or list(TOOL_SPECS))]

    def execute(self, call: ToolCall) -> ToolResult:
        """Run one call; mistakes come back as error results, budget exhaustion propagates."""
        handler = getattr(self, f"_tool_{call.name}", None)
        if handler is None or call.name not in TOOL_SPECS:
            return ToolResult(f"unknown tool {call.name!r}; available: {', '.join(TOOL_SPECS)}", True)
        if "_raw_arguments" in call.arguments:
            return ToolResult(
                f"arguments were not valid JSON: {call.arguments['_raw_arguments'][:200]}", True
            )
        try:
            return ToolResult(bound(handler(**call.arguments), self.max_result_chars))
        except BudgetExceeded:
            raise
        except TypeError as exc:
            return ToolResult(f"bad arguments for {call.name}: {exc}", True)
        except OmniError as exc:
            return ToolResult(str(exc), True)

    # ------------------------------------------------------------ paths
    def _inside(self, root: Path, rel: str) -> Path:
        if not isinstance(rel, str) or not rel or rel.startswith(("/", "~")):
            raise ToolFailure(f"path must be relative to {root.name}/, got {rel!r}")
        path = (root / rel).resolve()
        if not path.is_relative_to(root.resolve()):
            raise ToolFailure(f"path {rel!r} leaves {root.name}/; only files inside it are allowed")
        return path

    @property
    def cpp_dir(self) -> Path:
        """The run's C++ project folder (the only place the agent may write)."""
        return Path(self.run_dir) / "cpp"

    # ------------------------------------------------------------ tools
    def _tool_read_file(self, path: str, offset: int = 0) -> str:
        target = self._inside(Path(self.run_dir), path)
        if not target.is_file():
            raise ToolFailure(f"no file {path!r} in the run directory")
        data = target.read_bytes()
        if b"\0" in data[:4096]:
            raise ToolFailure(f"{path} is binary ({len(data)} bytes); read the JSON or text files instead")
        text = data.decode("utf-8", "replace")
        window = self.max_result_chars - 200
        piece = text[offset : offset + window]
        if offset + window < len(text):
            piece += f"\n[... {len(text) - offset - window} more characters: call read_file with offset={offset + window}]"
        return piece

    def _tool_write_cpp(self, path: str, content: str) -> str:
        target = self._inside(self.cpp_dir, path)
        if not target.name.endswith(CPP_SUFFIXES):
            raise ToolFailure(
                f"{path}: only C/C++ sources and CMake files may be written ({', '.join(CPP_SUFFIXES)})"
            )
        if len(content) > MAX_WRITE_CHARS:
            raise ToolFailure(f"{path}: {len(content)} characters is over the {MAX_WRITE_CHARS} limit")
        with atomic_path(target) as tmp:
            tmp.write_text(content, encoding="utf-8")
        self.written.append(path)
        return f"wrote cpp/{path} ({content.count(chr(10)) + 1} lines)"

    def _tool_patch_cpp(self, path: str, old: str, new: str) -> str:
        target = self._inside(self.cpp_dir, path)
        if not target.is_file():
            raise ToolFailure(f"no file cpp/{path}; use write_cpp to create it")
        text = target.read_text(encoding="utf-8")
        count = text.count(old) if old else 0
        if count != 1:
            raise ToolFailure(f"cpp/{path}: the old text occurs {count} times; it must occur exactly once")
        with atomic_path(target) as tmp:
            tmp.write_text(text.replace(old, new, 1), encoding="utf-8")
        self.written.append(path)
        line = text[: text.index(old)].count("\n") + 1
        return f"patched cpp/{path} at line {line}"

    def _tool_search_kb(self, query: str, limit: int = 8) -> str:
        from omnimodel.kb.index import search

        hits = search(query, limit=max(1, min(int(limit), 20)), run_dir=Path(self.run_dir))
        if not hits:
            return f"no results for {query!r}"
        lines = []
        for hit in hits:
            s = hit.symbol
            doc = s.doc.strip().splitlines()[0] if s.doc.strip() else ""
            lines.append(f"{s.path}:{s.line} {s.kind} {s.name} ({hit.score:.1f})")
            if s.signature:
                lines.append(f"    {s.signature[:300]}")
            if doc:
                lines.append(f"    {doc[:200]}")
        return "\n".join(lines)

    def _tool_ggml_api(self, names: list[str]) -> str:
        entries = ggml_api_entries(self.kb_dir)
        out = []
        for name in names:
            entry = entries.get(name)
            out.append(entry if entry else f"### {name}\nnot an exported GGML function; try search_kb")
        return "\n\n".join(out)

    def _tool_build(self) -> str:
        if self.build is None:
            raise ToolFailure("build is not available in this session")
        return self.build()

    def _tool_run_parity(self, module: str) -> str:
        if self.run_parity is None:
            raise ToolFailure("run_parity is not available in this session")
        return self.run_parity(module)

    def _tool_show_module(self, module: str) -> str:
        if self.show_module is None:
            raise ToolFailure("show_module is not available in this session")
        return self.show_module(module)


def ggml_api_entries(kb_dir: Path | None = None) -> dict[str, str]:
    """Function name -> its Markdown entry, from every notes file in knowledge_base/ggml_api/."""
    folder = (Path(kb_dir) if kb_dir is not None else knowledge_base_dir()) / "ggml_api"
    entries: dict[str, str] = {}
    for notes in sorted(folder.glob("*.md")):
        text = notes.read_text(encoding="utf-8")
        for match in re.finditer(r"^### (\w+)\n(.*?)(?=^##|\Z)", text, re.M | re.S):
            entries.setdefault(match.group(1), f"### {match.group(1)}\n{match.group(2).strip()}")
    return entries
