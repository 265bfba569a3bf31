"""Extract symbols (functions, structs, classes, methods, notes, skills) from source files with tree-sitter."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import yaml

SNIPPET_CHARS = 2000
CPP_SUFFIXES = (".c", ".cc", ".cpp", ".cxx", ".h", ".hh", ".hpp", ".cu", ".cuh", ".cpp.j2", ".h.j2")
PY_SUFFIXES = (".py",)
MD_SUFFIXES = (".md",)


@dataclass
class Symbol:
    """One searchable unit: where it is, what it is called, what kind, its signature, doc and code."""

    path: str
    line: int
    name: str
    kind: str
    signature: str = ""
    doc: str = ""
    snippet: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The JSON form kept in the index cache."""
        return asdict(self)


def language_of(path: Path) -> str | None:
    """ "cpp", "python" or "markdown" by file name, else None (not indexed)."""
    name = path.name.lower()
    if name.endswith(CPP_SUFFIXES):
        return "cpp"
    if name.endswith(PY_SUFFIXES):
        return "python"
    if name.endswith(MD_SUFFIXES):
        return "markdown"
    return None


def extract_symbols(path: Path, text: str, display: str) -> list[Symbol]:
    """All symbols of one file; `display` is the path shown in results."""
    lang = language_of(path)
    if lang == "cpp":
        return CppExtractor(text, display).run()
    if lang == "python":
        return PythonExtractor(text, display).run()
    if lang == "markdown":
        if path.name == "SKILL.md":
            return skill_symbols(text, display)
        return markdown_symbols(text, display)
    return []


@lru_cache(maxsize=2)
def parser_for(lang: str):  # noqa: ANN201 - tree_sitter.Parser
    """A cached tree-sitter parser for "cpp" or "python"."""
    import tree_sitter

    if lang == "cpp":
        import tree_sitter_cpp as grammar
    else:
        import tree_sitter_python as grammar
    return tree_sitter.Parser(tree_sitter.Language(grammar.language()))


def clean_comment(text: str) -> str:
    """Comment text without //, /* */, leading * and Doxygen markers."""
    text = re.sub(r"^/\*+|\*+/$", "", text.strip())
    lines = []
    for line in text.splitlines():
        line = re.sub(r"^\s*(///?<?|//!|\*|#)\s?", "", line).rstrip()
        lines.append(line)
    return "\n".join(lines).strip()


def _collapse(text: str) -> str:
    return " ".join(text.split())


def _cut(text: str, limit: int = SNIPPET_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + "\n..."


class CppExtractor:
    """Walks a tree-sitter C++ tree; templates with Jinja markers parse well enough to index."""

    CONTAINERS = (
        "translation_unit",
        "namespace_definition",
        "linkage_specification",
        "declaration_list",
        "template_declaration",
        "preproc_ifdef",
        "preproc_if",
        "preproc_else",
        "preproc_elif",
        "ERROR",
    )
    TYPES = {
        "struct_specifier": "struct",
        "class_specifier": "class",
        "union_specifier": "struct",
        "enum_specifier": "enum",
    }

    def __init__(self, text: str, display: str) -> None:
        self.src = blank_export_macros(text).encode("utf-8")
        self.display = display
        self.out: list[Symbol] = []
        self.classes: set[str] = set()
        self.namespaces: set[str] = set()

    def run(self) -> list[Symbol]:
        """Parse and return the symbols."""
        tree = parser_for("cpp").parse(self.src)
        self._visit(tree.root_node, owner="")
        return self.out

    def _text(self, node) -> str:  # noqa: ANN001
        return self.src[node.start_byte : node.end_byte].decode("utf-8", "replace")

    def _doc(self, node) -> str:  # noqa: ANN001
        """Comments directly above `node` (no blank line between) plus a trailing same-line comment."""
        parts: list[str] = []
        prev, row = node.prev_sibling, node.start_point[0]
        while prev is not None and prev.type == "comment" and prev.end_point[0] >= row - 1:
            parts.insert(0, clean_comment(self._text(prev)))
            row = prev.start_point[0]
            prev = prev.prev_sibling
        nxt = node.next_sibling
        if nxt is not None and nxt.type == "comment" and nxt.start_point[0] == node.end_point[0]:
            parts.append(clean_comment(self._text(nxt)))
        return "\n".join(p for p in parts if p)

    def _visit(self, node, owner: str) -> None:  # noqa: ANN001
        for child in node.children:
            kind = child.type
            if kind == "namespace_definition":
                name_node = child.child_by_field_name("name")
                inner = self._text(name_node) if name_node is not None else ""
                body = child.child_by_field_name("body")
                if body is not None:
                    scope = f"{owner}::{inner}" if owner and inner else (inner or owner)
                    self.namespaces.add(scope)
                    self._visit(body, scope)
            elif kind in self.CONTAINERS:
                self._visit(child, owner)
            elif kind == "function_definition":
                self._function(child, owner, body=child.child_by_field_name("body"))
            elif kind in ("declaration", "field_declaration"):
                self._declaration(child, owner)
            elif kind in self.TYPES:
                self._type(child, owner)

    def _declaration(self, node, owner: str) -> None:  # noqa: ANN001
        if _function_declarator(node) is not None:
            self._function(node, owner, body=None)
            return
        for child in node.children:  # `typedef struct {...} x;` or `struct x {...} y;`
            if child.type in self.TYPES:
                self._type(child, owner)

    def _function(self, node, owner: str, body) -> None:  # noqa: ANN001
        declarator = _function_declarator(node)
        if declarator is None:
            return
        name_node = declarator.child_by_field_name("declarator")
        name = self._text(name_node) if name_node is not None else ""
        tokens = re.findall(r"[\w:~]+", name)  # a misparsed macro can leave "type name"
        name = tokens[-1] if tokens else ""
        if not name:
            return
        qualified = f"{owner}::{name}" if owner else name
        prefix = qualified.rsplit("::", 1)[0] if "::" in qualified else ""
        kind = (
            "method" if prefix in self.classes or (prefix and prefix not in self.namespaces) else "function"
        )
        head = self._text(node)[: (body.start_byte - node.start_byte) if body is not None else None]
        signature = _collapse(head).rstrip(";").strip()
        self.out.append(
            Symbol(
                self.display,
                node.start_point[0] + 1,
                qualified,
                kind,
                signature,
                self._doc(node),
                _cut(self._text(node)),
            )
        )

    def _type(self, node, owner: str) -> None:  # noqa: ANN001
        name_node = node.child_by_field_name("name")
        body = node.child_by_field_name("body")
        if name_node is None or body is None:
            return
        name = self._text(name_node)
        qualified = f"{owner}::{name}" if owner else name
        signature = _collapse(self._text(node)[: body.start_byte - node.start_byte])
        self.out.append(
            Symbol(
                self.display,
                node.start_point[0] + 1,
                qualified,
                self.TYPES[node.type],
                signature,
                self._doc(node),
                _cut(self._text(node)),
            )
        )
        if node.type != "enum_specifier":
            self.classes.add(qualified)
            self._visit(body, qualified)


EXPORT_MACRO = re.compile(
    r"\b[A-Z][A-Z0-9]*_(?:API|EXPORT|CALL|NORETURN)\b|\b[A-Z][A-Z0-9]*_ATTRIBUTE_\w+\([^()]*\)"
)


DEPRECATED_MACRO = re.compile(r"\b[A-Z][A-Z0-9]*_DEPRECATED\(")


def blank_export_macros(text: str) -> str:
    """Export/attribute macros (GGML_API, XX_ATTRIBUTE_FORMAT(..)) replaced by spaces, keeping positions.

    `XX_DEPRECATED(declaration, "hint")` keeps only the declaration.
    """
    text = EXPORT_MACRO.sub(lambda m: " " * len(m.group(0)), text)
    chars = list(text)
    for match in DEPRECATED_MACRO.finditer(text):
        if text[max(0, match.start() - 40) : match.start()].rstrip().endswith("define"):
            continue
        depth, last_comma, end = 1, -1, -1
        for i in range(match.end(), len(text)):
            ch = text[i]
            if ch == "(":
                depth += 1
            elif ch == ")":
                depth -= 1
                if depth == 0:
                    end = i
                    break
            elif ch == "," and depth == 1:
                last_comma = i
        if end < 0 or last_comma < 0:
            continue
        for i in [*range(match.start(), match.end()), *range(last_comma, end + 1)]:
            if chars[i] != "\n":
                chars[i] = " "
    return "".join(chars)


def _function_declarator(node):  # noqa: ANN001, ANN202
    """The function_declarator under a declaration's declarator chain (pointers, references)."""
    current = node.child_by_field_name("declarator")
    while current is not None:
        if current.type == "function_declarator":
            return current
        if current.type in (
            "pointer_declarator",
            "reference_declarator",
            "init_declarator",
            "parenthesized_declarator",
        ):
            current = current.child_by_field_name("declarator") or (
                current.named_children[0] if current.named_children else None
            )
        else:
            return None
    return None


class PythonExtractor:
    """Functions, classes and methods of a Python file, with docstrings and leading comments."""

    def __init__(self, text: str, display: str) -> None:
        self.src = text.encode("utf-8")
        self.display = display
        self.out: list[Symbol] = []

    def run(self) -> list[Symbol]:
        """Parse and return the symbols."""
        tree = parser_for("python").parse(self.src)
        self._visit(tree.root_node, owner="")
        return self.out

    def _text(self, node) -> str:  # noqa: ANN001
        return self.src[node.start_byte : node.end_byte].decode("utf-8", "replace")

    def _visit(self, node, owner: str) -> None:  # noqa: ANN001
        for child in node.children:
            target = child
            if child.type == "decorated_definition":
                target = child.child_by_field_name("definition") or child
            if target.type in ("function_definition", "class_definition"):
                self._definition(child, target, owner)

    def _definition(self, outer, node, owner: str) -> None:  # noqa: ANN001
        name = self._text(node.child_by_field_name("name"))
        qualified = f"{owner}.{name}" if owner else name
        is_class = node.type == "class_definition"
        kind = "class" if is_class else ("method" if owner else "function")
        body = node.child_by_field_name("body")
        signature = _collapse(self._text(node)[: body.start_byte - node.start_byte]).rstrip(":")
        self.out.append(
            Symbol(
                self.display,
                outer.start_point[0] + 1,
                qualified,
                kind,
                signature,
                self._docstring(body),
                _cut(self._text(outer)),
            )
        )
        if is_class and body is not None:
            self._visit(body, qualified)

    def _docstring(self, body) -> str:  # noqa: ANN001
        if body is None or not body.named_children:
            return ""
        first = body.named_children[0]
        if (
            first.type == "expression_statement"
            and first.named_children
            and first.named_children[0].type == "string"
        ):
            raw = self._text(first.named_children[0])
            return re.sub(r"^[rbuRBU]*(\"\"\"|'''|\"|')|(\"\"\"|'''|\"|')$", "", raw).strip()
        return ""


def markdown_symbols(text: str, display: str, line_offset: int = 0) -> list[Symbol]:
    """One symbol per heading section; `### ggml_xxx` entries of API notes get kind "ggml_api"."""
    out: list[Symbol] = []
    lines = text.splitlines()
    heads = [(i, m) for i, line in enumerate(lines) if (m := re.match(r"^(#{1,6})\s+(.*\S)\s*$", line))]
    for k, (i, match) in enumerate(heads):
        end = heads[k + 1][0] if k + 1 < len(heads) else len(lines)
        body = "\n".join(lines[i + 1 : end]).strip()
        title = match.group(2).strip("` ")
        kind = "ggml_api" if re.fullmatch(r"(ggml|gguf)_\w+", title) else "note"
        code = re.search(r"```\w*\n(.*?)```", body, re.S)
        signature = _collapse(code.group(1)) if (code and kind == "ggml_api") else ""
        doc = re.sub(r"```.*?```", "", body, flags=re.S).strip()
        out.append(Symbol(display, line_offset + i + 1, title, kind, signature, _cut(doc, 800), _cut(body)))
    return out


def skill_symbols(text: str, display: str) -> list[Symbol]:
    """The skill itself (from SKILL.md front matter) plus the sections of its body."""
    match = re.match(r"^---\s*\n(.*?)\n---\s*\n?(.*)$", text, re.S)
    if not match:
        return markdown_symbols(text, display)
    try:
        meta = yaml.safe_load(match.group(1)) or {}
    except yaml.YAMLError:
        meta = {}
    if not isinstance(meta, dict):
        meta = {}
    name = str(meta.get("name") or Path(display).parent.name)
    applies = yaml.safe_dump(meta.get("applies_to") or [], default_flow_style=True, width=1000).strip()
    doc = f"{meta.get('description', '')}\napplies_to: {applies}\nprovenance: {meta.get('provenance', '')}"
    skill = Symbol(
        display, 1, name, "skill", f"skill {name} v{meta.get('version', '?')}", doc.strip(), _cut(text)
    )
    offset = text[: match.start(2)].count("\n")
    return [skill, *markdown_symbols(match.group(2), display, offset)]
