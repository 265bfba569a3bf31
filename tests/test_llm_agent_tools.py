"""Agent tools: schemas, run-directory confinement, cpp/-only writes, bounded results, KB and GGML notes."""

from __future__ import annotations

from pathlib import Path

import pytest

from omnimodel.agent.tools import MAX_RESULT_CHARS, TOOL_SPECS, ToolBox, bound
from omnimodel.llm import ToolCall
from omnimodel.llm.budget import BudgetExceeded

NOTES = """\
# notes

## ops

### ggml_gelu
`ggml/include/ggml.h:10`

```c
struct ggml_tensor * ggml_gelu(struct ggml_context * ctx, struct ggml_tensor * a);
```
GELU with the tanh approximation

### ggml_mul
```c
struct ggml_tensor * ggml_mul(struct ggml_context * ctx, struct ggml_tensor * a, struct ggml_tensor * b);
```
"""


@pytest.fixture()
def box(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ToolBox:
    monkeypatch.setenv("OMNIMODEL_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("OMNIMODEL_SKILLS_DIR", str(tmp_path / "skills"))
    kb = tmp_path / "kb"
    (kb / "ggml_api").mkdir(parents=True)
    (kb / "ggml_api" / "ggml_api.md").write_text(NOTES)
    monkeypatch.setenv("OMNIMODEL_KB_DIR", str(kb))
    run = tmp_path / "run"
    (run / "cpp").mkdir(parents=True)
    (run / "plan.json").write_text('{"needs_llm": [{"name": "head.mlp"}]}')
    (run / "cpp" / "model.cpp").write_text("int film(int x) {\n    return x + 1;\n}\n")
    (tmp_path / "secret.txt").write_text("outside")
    return ToolBox(run, build=lambda: "ok: built", run_parity=lambda m: f"{m}: cosine 0.99999")


def call(box: ToolBox, name: str, **args):  # noqa: ANN201
    return box.execute(ToolCall("id", name, args))


def test_every_tool_has_an_object_schema() -> None:
    for spec in TOOL_SPECS.values():
        assert spec.parameters["type"] == "object"
        assert set(spec.parameters["required"]) <= set(spec.parameters["properties"])
        assert spec.description
    assert {
        "read_file",
        "write_cpp",
        "patch_cpp",
        "search_kb",
        "ggml_api",
        "build",
        "run_parity",
        "show_module",
    } == set(TOOL_SPECS)


def test_read_file_is_confined_to_the_run_and_paged(box: ToolBox) -> None:
    assert call(box, "read_file", path="plan.json").content.startswith('{"needs_llm"')
    for bad in ("../secret.txt", "/etc/passwd", "cpp/../../secret.txt"):
        result = call(box, "read_file", path=bad)
        assert result.is_error, bad
    assert call(box, "read_file", path="missing.json").is_error
    (box.run_dir / "big.log").write_text("x" * (3 * MAX_RESULT_CHARS))
    first = call(box, "read_file", path="big.log").content
    assert len(first) <= MAX_RESULT_CHARS and "call read_file with offset=" in first
    offset = int(first.rsplit("offset=", 1)[1].rstrip("]"))
    assert call(box, "read_file", path="big.log", offset=offset).content.startswith("x")
    (box.run_dir / "model.gguf").write_bytes(b"GGUF\0\0\0")
    assert "binary" in call(box, "read_file", path="model.gguf").content


def test_writes_only_inside_cpp(box: ToolBox) -> None:
    ok = call(box, "write_cpp", path="modules/film.cpp", content="// film\n")
    assert not ok.is_error and (box.cpp_dir / "modules" / "film.cpp").read_text() == "// film\n"
    assert call(box, "write_cpp", path="../plan.json", content="{}").is_error
    assert (box.run_dir / "plan.json").read_text().startswith('{"needs_llm"')
    assert call(box, "write_cpp", path="run.sh", content="rm -rf /").is_error
    patched = call(box, "patch_cpp", path="model.cpp", old="x + 1", new="x + 2")
    assert patched.content == "patched cpp/model.cpp at line 2"
    assert "x + 2" in (box.cpp_dir / "model.cpp").read_text()
    twice = call(box, "patch_cpp", path="model.cpp", old="x", new="y")
    assert twice.is_error and "occurs 2 times" in twice.content
    assert box.written == ["modules/film.cpp", "model.cpp"]


def test_bad_calls_come_back_as_errors(box: ToolBox) -> None:
    assert call(box, "rm_rf").is_error
    assert "bad arguments" in call(box, "read_file", file="plan.json").content
    raw = box.execute(ToolCall("id", "build", {"_raw_arguments": "{oops"}))
    assert raw.is_error and "not valid JSON" in raw.content
    assert call(box, "show_module", module="m").content == "show_module is not available in this session"
    assert call(box, "build").content == "ok: built"
    assert call(box, "run_parity", module="head.mlp").content == "head.mlp: cosine 0.99999"


def test_budget_exhaustion_is_not_swallowed(box: ToolBox) -> None:
    def spent() -> str:
        raise BudgetExceeded("LLM budget spent")

    box.build = spent
    with pytest.raises(BudgetExceeded):
        call(box, "build")


def test_search_and_ggml_notes(box: ToolBox) -> None:
    found = call(box, "search_kb", query="film").content
    assert found.startswith(str(box.cpp_dir / "model.cpp") + ":1 function film")
    gelu = call(box, "ggml_api", names=["ggml_gelu", "ggml_nope"]).content
    assert "struct ggml_tensor * ggml_gelu(" in gelu and "tanh approximation" in gelu
    assert "### ggml_nope\nnot an exported GGML function" in gelu
    assert "ggml_mul(" not in gelu


def test_results_are_bounded_keeping_head_and_tail(box: ToolBox) -> None:
    log = "error: first\n" + "noise\n" * 10_000 + "error: last\n"
    box.build = lambda: log
    result = call(box, "build").content
    assert len(result) < MAX_RESULT_CHARS + 100
    assert result.startswith("error: first") and result.rstrip().endswith("error: last")
    assert bound("short") == "short"
