"""Record/replay transcripts, request matching, the budget and the provider factory."""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import httpx2
import pytest
from conftest import require

from omnimodel.errors import LLMError
from omnimodel.llm import Budget, BudgetExceeded, Message, Request, ToolCall, ToolSpec, make_provider
from omnimodel.llm.openai_provider import OpenAIProvider
from omnimodel.llm.record import RecordingProvider
from omnimodel.llm.replay import ReplayProvider

REPO = Path(__file__).resolve().parent.parent
BUILD = ToolSpec("build", "Build cpp/.", {"type": "object", "properties": {"target": {"type": "string"}}})


def completion(text: str | None, calls: list[tuple[str, str, dict]] = ()) -> dict:
    message: dict = {"role": "assistant", "content": text}
    if calls:
        message["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
            for i, n, a in calls
        ]
    return {
        "id": "x",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-test",
        "choices": [{"index": 0, "message": message, "finish_reason": "tool_calls" if calls else "stop"}],
        "usage": {"prompt_tokens": 50, "completion_tokens": 5, "total_tokens": 55},
    }


def scripted_openai(monkeypatch: pytest.MonkeyPatch, bodies: list[dict]) -> OpenAIProvider:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    queue = list(bodies)
    transport = httpx2.MockTransport(lambda request: httpx2.Response(200, json=queue.pop(0)))
    return OpenAIProvider("gpt-test", http_client=httpx2.Client(transport=transport))


def agent_turns(provider, run_dir: Path, call_id: str = "c1", log_tail: str = "") -> list:
    """Two calls of a tiny agent loop: ask, get a tool call, send the result (which names the run dir)."""
    first = Request("Port modules.", (Message.user("Port mlp."),), (BUILD,), max_tokens=100)
    r1 = provider.complete(first)
    call = r1.tool_calls[0]
    result = f"{run_dir}/cpp/model.cpp:3: error: expected ';'{log_tail}"
    second = Request(
        "Port modules.",
        (
            Message.user("Port mlp."),
            Message.assistant(r1.text, (ToolCall(call_id, call.name, call.arguments),)),
            Message.tool_result(call_id, result, is_error=True),
        ),
        (BUILD,),
        max_tokens=100,
    )
    r2 = provider.complete(second)
    return [r1, r2]


def disable_sockets(monkeypatch: pytest.MonkeyPatch) -> None:
    def refuse(*args, **kwargs):
        raise AssertionError("network access attempted during replay")

    monkeypatch.setattr(socket, "socket", refuse)
    monkeypatch.setattr(socket, "create_connection", refuse)
    monkeypatch.setattr(socket, "getaddrinfo", refuse)


def record(monkeypatch: pytest.MonkeyPatch, run_dir: Path) -> tuple[Path, list]:
    live = scripted_openai(
        monkeypatch, [completion("Building.", [("call_x", "build", {"target": "all"})]), completion("Fixed.")]
    )
    recorder = RecordingProvider(live, run_dir)
    responses = agent_turns(recorder, run_dir)
    return recorder.path, responses


def test_record_then_replay_without_network(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    transcript, recorded = record(monkeypatch, tmp_path / "run1")
    lines = [json.loads(x) for x in transcript.read_text().splitlines()]
    assert lines[0]["header"]["model"] == "gpt-test"
    assert [line["request"]["model"] for line in lines[1:]] == ["gpt-test", "gpt-test"]

    disable_sockets(monkeypatch)
    with pytest.raises(AssertionError):
        socket.create_connection(("example.com", 80))
    # a different run directory, other tool-call ids: volatile fields do not break the match
    provider = make_provider(f"replay:{transcript}", tmp_path / "run2")
    replayed = agent_turns(provider, tmp_path / "run2", call_id="other_id")
    assert replayed == recorded
    assert provider.accounting.as_report() == {"calls": 2, "input_tokens": 100, "output_tokens": 10}
    with pytest.raises(LLMError, match="holds only 2 calls"):
        provider.complete(Request("Port modules.", (Message.user("again"),), (BUILD,)))


def test_replay_mismatch_names_first_difference(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    transcript, _ = record(monkeypatch, tmp_path / "run1")
    provider = ReplayProvider(transcript, tmp_path / "run2")
    with pytest.raises(LLMError) as info:
        agent_turns(provider, tmp_path / "run2", log_tail=" (and more)")
    message = str(info.value)
    assert "call 2" in message
    assert "messages[2].result" in message
    assert "expected" in message and "(and more)" in message
    assert "\n" not in message


def test_replay_checks_model_and_tool_schema(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    transcript, _ = record(monkeypatch, tmp_path / "run1")
    request = Request("Port modules.", (Message.user("Port mlp."),), (BUILD,), model="gpt-other")
    with pytest.raises(LLMError, match=r"at model: .*expected 'gpt-test' got 'gpt-other'"):
        ReplayProvider(transcript).complete(request)
    other_schema = ToolSpec(
        "build", "Build cpp/.", {"type": "object", "properties": {"target": {"type": "integer"}}}
    )
    request = Request("Port modules.", (Message.user("Port mlp."),), (other_schema,))
    with pytest.raises(LLMError, match=r"tools\[0\]\.parameters\.properties\.target\.type"):
        ReplayProvider(transcript).complete(request)
    request = Request("Port modules.", (Message.user("Port mlp."),), ())
    with pytest.raises(LLMError, match=r"tools: expected 1 items, got 0"):
        ReplayProvider(transcript).complete(request)


def write_authored(path: Path, entries: list[dict]) -> Path:
    header = {"header": {"authored": True, "note": "authored, not recorded from a live model", "model": "m"}}
    path.write_text("\n".join(json.dumps(x) for x in [header, *entries]) + "\n")
    return path


def test_authored_transcript_with_prefix_and_tail_match(tmp_path: Path) -> None:
    reply = {
        "text": "ok",
        "tool_calls": [],
        "stop_reason": "end_turn",
        "usage": {"input_tokens": 1, "output_tokens": 1},
    }
    entry = {
        "match": ["prefix", "tail"],
        "request": {
            "system": "sys",
            "tools": [],
            "messages": [{"role": "tool", "content": "parity: cosine 0.99"}],
        },
        "response": reply,
    }
    path = write_authored(tmp_path / "t.jsonl", [entry, {**entry, "match": "tail"}])
    provider = ReplayProvider(path)
    assert provider.model == "m"
    history = (Message.user("earlier turn"), Message.tool_result("id", "parity: cosine 0.99987 (took 1.2 s)"))
    assert provider.complete(Request("sys", history)).text == "ok"
    # without "prefix" the volatile tail now counts as a difference
    with pytest.raises(LLMError, match=r"messages\[0\]\.result: differs at char 19"):
        provider.complete(Request("sys", history))


def test_transcript_errors_are_one_line(tmp_path: Path) -> None:
    with pytest.raises(LLMError, match="does not exist"):
        ReplayProvider(tmp_path / "missing.jsonl")
    bad = tmp_path / "bad.jsonl"
    bad.write_text('{"header": {}}\n{not json\n')
    with pytest.raises(LLMError, match="bad.jsonl:2 is not valid JSON"):
        ReplayProvider(bad)
    odd = write_authored(tmp_path / "odd.jsonl", [{"match": "fuzzy", "request": {}, "response": {}}])
    with pytest.raises(LLMError, match="unknown match mode 'fuzzy'"):
        ReplayProvider(odd)


def test_budget_stops_calls_tokens_and_time(tmp_path: Path) -> None:
    reply = {"text": "again", "usage": {"input_tokens": 600, "output_tokens": 100}}
    entry = {
        "match": "tail",
        "request": {"system": "", "messages": [{"role": "user", "content": "go"}]},
        "response": reply,
    }
    path = write_authored(tmp_path / "t.jsonl", [entry] * 10)
    ask = Request("", (Message.user("go"),))

    provider = make_provider(
        f"replay:{path}", tmp_path, Budget(max_calls=3, max_tokens=None, max_wall_s=None)
    )
    for _ in range(3):
        provider.complete(ask)
    with pytest.raises(BudgetExceeded, match="3 of 3 calls"):
        provider.complete(ask)
    assert provider.accounting.calls == 3

    provider = make_provider(
        f"replay:{path}", tmp_path, Budget(max_calls=None, max_tokens=1000, max_wall_s=None)
    )
    provider.complete(ask)
    provider.complete(ask)
    with pytest.raises(BudgetExceeded, match="1400 of 1000 tokens"):
        provider.complete(ask)

    now = [0.0]
    budget = Budget(max_calls=None, max_tokens=None, max_wall_s=60, clock=lambda: now[0])
    provider = make_provider(f"replay:{path}", tmp_path, budget)
    provider.complete(ask)
    now[0] = 61.0
    with pytest.raises(BudgetExceeded, match="wall time"):
        provider.complete(ask)
    assert isinstance(BudgetExceeded("x"), LLMError)


def test_factory_specs(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("ANTHROPIC_API_KEY", raising=False)
    with pytest.raises(LLMError, match="ANTHROPIC_API_KEY is not set"):
        make_provider("anthropic:claude-x", tmp_path)
    with pytest.raises(LLMError, match="ANTHROPIC_API_KEY"):
        make_provider("record:anthropic:claude-x", tmp_path)
    with pytest.raises(LLMError, match="unknown LLM provider 'mistral'"):
        make_provider("mistral:large", tmp_path)
    with pytest.raises(LLMError, match="needs a model"):
        make_provider("openai", tmp_path)
    monkeypatch.setenv("OPENAI_API_KEY", "sk")
    provider = make_provider("record:openai:gpt-x", tmp_path)
    assert provider.name == "record:openai" and provider.model == "gpt-x"
    assert json.loads((tmp_path / "transcript.jsonl").read_text())["header"]["recorded"] is True


def test_replay_in_a_network_namespace(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    unshare = shutil.which("unshare")
    works = bool(unshare) and subprocess.run([unshare, "-rn", "true"], capture_output=True).returncode == 0
    require(works, "unshare -rn (user + network namespaces) to run replay with networking disabled")
    transcript, _ = record(monkeypatch, tmp_path / "run1")
    script = (
        "import sys\n"
        "from pathlib import Path\n"
        "from omnimodel.llm import Message, Request, ToolSpec, make_provider\n"
        "build = ToolSpec('build', 'Build cpp/.', {'type': 'object', 'properties': {'target': {'type': 'string'}}})\n"
        "p = make_provider('replay:' + sys.argv[1], Path(sys.argv[2]))\n"
        "r = p.complete(Request('Port modules.', (Message.user('Port mlp.'),), (build,)))\n"
        "print(r.tool_calls[0].name)\n"
    )
    env = {"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"}
    done = subprocess.run(
        [unshare, "-rn", sys.executable, "-c", script, str(transcript), str(tmp_path / "run2")],
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "build"
