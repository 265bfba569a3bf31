"""The agent loop driven by an authored replay transcript: a compile error fed back and repaired; the budget stops it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from omnimodel.agent.loop import run_agent
from omnimodel.agent.tools import ToolBox
from omnimodel.errors import LLMError
from omnimodel.llm import Budget, make_provider

BROKEN = "float film(float x) {\n    return x * 2.0f\n}\n"


def tool_use(*calls: tuple[str, str, dict]) -> dict:
    return {
        "text": "",
        "tool_calls": [{"id": i, "name": n, "arguments": a} for i, n, a in calls],
        "stop_reason": "tool_use",
        "usage": {"input_tokens": 100, "output_tokens": 20},
    }


def tail(*results: tuple[str, bool]) -> list[dict]:
    return [{"role": "tool", "content": text, "is_error": err} for text, err in results]


def authored(path: Path) -> Path:
    header = {
        "header": {
            "authored": True,
            "note": "authored, not recorded from a live model",
            "model": "test-model",
        }
    }
    entries = [
        {
            "match": "tail",
            "request": {
                "system": "Port one module.",
                "messages": [{"role": "user", "content": "Write film."}],
            },
            "response": tool_use(
                ("w1", "write_cpp", {"path": "film.cpp", "content": BROKEN}), ("b1", "build", {})
            ),
        },
        {
            "match": ["tail", "prefix"],
            "request": {
                "system": "Port one module.",
                "messages": tail(
                    ("wrote cpp/film.cpp (4 lines)", False),
                    ("<RUN_DIR>/cpp/film.cpp:2: error: expected ';'", False),
                ),
            },
            "response": tool_use(
                ("p1", "patch_cpp", {"path": "film.cpp", "old": "2.0f\n", "new": "2.0f;\n"}),
                ("b2", "build", {}),
            ),
        },
        {
            "match": "tail",
            "request": {
                "system": "Port one module.",
                "messages": tail(("patched cpp/film.cpp at line 2", False), ("ok", False)),
            },
            "response": {
                "text": "film builds.",
                "stop_reason": "end_turn",
                "usage": {"input_tokens": 300, "output_tokens": 5},
            },
        },
    ]
    for entry in entries:
        entry["request"]["tools"] = [t.to_dict() for t in ToolBox(Path(".")).specs()]
        entry["request"]["model"] = "test-model"
    path.write_text("\n".join(json.dumps(x) for x in [header, *entries]) + "\n")
    return path


def fake_build(run: Path):  # noqa: ANN201
    """A stand-in for the sandbox build: a missing semicolon after the return is a compile error."""

    def build() -> str:
        src = (run / "cpp" / "film.cpp").read_text()
        if "2.0f;" not in src:
            return f"{run}/cpp/film.cpp:2: error: expected ';' before '}}' token (took 0.31 s)"
        return "ok"

    return build


@pytest.fixture()
def run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("OMNIMODEL_CACHE", str(tmp_path / "cache"))
    (tmp_path / "run" / "cpp").mkdir(parents=True)
    return tmp_path / "run"


def test_compile_error_is_fed_back_and_repaired(run: Path, tmp_path: Path) -> None:
    provider = make_provider(f"replay:{authored(tmp_path / 'film.jsonl')}", run)
    result = run_agent(provider, ToolBox(run, build=fake_build(run)), "Port one module.", "Write film.")
    assert result.outcome == "done" and result.text == "film builds."
    assert (run / "cpp" / "film.cpp").read_text() == BROKEN.replace("2.0f\n", "2.0f;\n")
    assert result.tool_calls == 4
    assert provider.accounting.as_report() == {"calls": 3, "input_tokens": 500, "output_tokens": 45}
    errors = [m for m in result.messages if m.role == "tool" and "error" in m.content]
    assert len(errors) == 1 and str(run) in errors[0].content


def test_a_different_repair_diverges_from_the_transcript(run: Path, tmp_path: Path) -> None:
    provider = make_provider(f"replay:{authored(tmp_path / 'film.jsonl')}", run)

    def never_builds() -> str:
        return "ld: undefined reference to ggml_gelu"

    with pytest.raises(
        LLMError, match=r"call 2\) request does not match the recording at messages\[1\]\.result"
    ):
        run_agent(provider, ToolBox(run, build=never_builds), "Port one module.", "Write film.")


def test_budget_stops_the_session_cleanly(run: Path, tmp_path: Path) -> None:
    budget = Budget(max_calls=1, max_tokens=None, max_wall_s=None)
    provider = make_provider(f"replay:{authored(tmp_path / 'film.jsonl')}", run, budget)
    result = run_agent(provider, ToolBox(run, build=fake_build(run)), "Port one module.", "Write film.")
    assert result.outcome == "budget"
    assert "1 of 1 calls" in result.error
    assert result.messages[-1].role == "tool" and "expected ';'" in result.messages[-1].content
