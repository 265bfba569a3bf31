"""GGML API notes: one entry per exported function with its comment; the committed notes match the pinned header."""

from __future__ import annotations

import re
from pathlib import Path

from conftest import require

from omnimodel.errors import OmniError
from omnimodel.kb.ggml_notes import render_notes, write_ggml_notes
from omnimodel.paths import REPO_ROOT

HEADER = """\
#pragma once
#define MY_DEPRECATED(func, hint) func

//
// tensor ops
//

    // add two tensors
    // (element-wise)
    MY_API struct my_tensor * my_add(
            struct my_context * ctx,
            struct my_tensor  * a,
            struct my_tensor  * b);

    MY_DEPRECATED(MY_API struct my_tensor * my_add1(
            struct my_context * ctx,
            struct my_tensor  * a),
        "use my_add instead");

    static inline int my_private_helper(int x) { return x; }

//
// memory
//

    MY_API size_t my_nbytes(const struct my_tensor * t); // bytes of the data
"""


def test_render_notes_from_a_small_header(tmp_path: Path) -> None:
    header = tmp_path / "my.h"
    header.write_text(HEADER)
    notes = render_notes(header, "my/include/my.h", "a test header")
    entries = re.findall(r"^### (\w+)$", notes, re.M)
    assert entries == ["my_add", "my_add1", "my_nbytes"]  # the static helper is not exported
    assert re.findall(r"^## (.+)$", notes, re.M) == ["tensor ops", "memory"]
    add = notes.split("### my_add\n", 1)[1].split("###", 1)[0]
    assert (
        "struct my_tensor * my_add(struct my_context * ctx, struct my_tensor * a, struct my_tensor * b);"
        in add
    )
    assert "add two tensors\n(element-wise)" in add
    assert "`my/include/my.h:10`" in add
    add1 = notes.split("### my_add1\n", 1)[1].split("###", 1)[0]
    assert "Deprecated: use my_add instead." in add1
    assert "bytes of the data" in notes.split("### my_nbytes\n", 1)[1]


def test_committed_notes_cover_every_exported_ggml_function() -> None:
    notes = (REPO_ROOT / "knowledge_base" / "ggml_api" / "ggml_api.md").read_text()
    entries = re.findall(r"^### (\w+)$", notes, re.M)
    assert len(entries) == len(set(entries)) > 300
    for name in (
        "ggml_mul_mat",
        "ggml_gelu",
        "ggml_norm",
        "ggml_rms_norm",
        "ggml_soft_max_ext",
        "ggml_rope_ext",
    ):
        assert name in entries
    declared = int(re.search(r"^(\d+) functions\.$", notes, re.M).group(1))
    assert declared == len(entries)
    mul_mat = notes.split("### ggml_mul_mat\n", 1)[1].split("###", 1)[0]
    assert "struct ggml_tensor * ggml_mul_mat(struct ggml_context * ctx," in mul_mat


def test_committed_notes_match_the_pinned_header(tmp_path: Path) -> None:
    try:
        from omnimodel.toolchain import ggml_source_dir

        root = ggml_source_dir()
    except (ImportError, OmniError) as exc:
        root = None
        reason = str(exc)
    require(root is not None, f"the pinned GGML source ({reason if root is None else ''})")
    written = write_ggml_notes(root, tmp_path)
    assert [p.name for p in written][0] == "ggml_api.md"
    header = (root / "include" / "ggml.h").read_text()
    statement = r"^\s*(?:GGML_DEPRECATED\(\s*)?GGML_API\b[^;{}#]*?\b(ggml_\w+)\s*\("
    exported = set(re.findall(statement, header, re.M))
    regenerated = (tmp_path / "ggml_api.md").read_text()
    assert set(re.findall(r"^### (\w+)$", regenerated, re.M)) == exported
    for path in written:
        committed = REPO_ROOT / "knowledge_base" / "ggml_api" / path.name
        assert committed.read_text() == path.read_text(), (
            f"{committed} is stale: run `omnimodel kb ggml-notes`"
        )
