"""Mocked-HTTP tests of the openai and anthropic providers: tool definitions out, tool calls back.

Both SDKs talk through `httpx2` (not `httpx`, which respx patches), so the mock is an
`httpx2.MockTransport` given to the SDK client: the SDK builds and parses real HTTP messages.
"""

from __future__ import annotations

import json

import httpx2
import pytest

from omnimodel.errors import LLMError
from omnimodel.llm import Message, Request, ToolCall, ToolSpec
from omnimodel.llm.anthropic_provider import AnthropicProvider
from omnimodel.llm.openai_provider import OpenAIProvider
from omnimodel.llm.retry import RetryPolicy

READ_FILE = ToolSpec(
    "read_file",
    "Read a file of the run.",
    {"type": "object", "properties": {"path": {"type": "string"}}, "required": ["path"]},
)
BUILD = ToolSpec("build", "Build the C++ project.", {"type": "object", "properties": {}})


class Server:
    """Answers queued (status, json body) pairs and keeps every request it received."""

    def __init__(self, replies: list[tuple[int, dict]]) -> None:
        self.replies = list(replies)
        self.requests: list[httpx2.Request] = []

    def __call__(self, request: httpx2.Request) -> httpx2.Response:
        self.requests.append(request)
        status, body = self.replies.pop(0)
        return httpx2.Response(status, json=body)

    def body(self, i: int) -> dict:
        return json.loads(self.requests[i].content)

    def client(self) -> httpx2.Client:
        return httpx2.Client(transport=httpx2.MockTransport(self))


def openai_completion(message: dict, finish: str) -> dict:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-test",
        "choices": [{"index": 0, "message": {"role": "assistant", **message}, "finish_reason": finish}],
        "usage": {"prompt_tokens": 120, "completion_tokens": 17, "total_tokens": 137},
    }


def anthropic_message(content: list[dict], stop: str) -> dict:
    return {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-test",
        "content": content,
        "stop_reason": stop,
        "stop_sequence": None,
        "usage": {"input_tokens": 200, "output_tokens": 31},
    }


def conversation() -> Request:
    """A second-turn request: the assistant called two tools and both results are sent back."""
    calls = (ToolCall("call_a", "read_file", {"path": "cpp/model.cpp"}), ToolCall("call_b", "build", {}))
    return Request(
        system="You port PyTorch modules to GGML.",
        messages=(
            Message.user("Port module mlp."),
            Message.assistant("Looking first.", calls),
            Message.tool_result("call_a", "int main() {}"),
            Message.tool_result("call_b", "error: expected ';'", is_error=True),
        ),
        tools=(READ_FILE, BUILD),
        max_tokens=512,
    )


@pytest.fixture()
def keys(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    monkeypatch.setenv("ANTHROPIC_API_KEY", "sk-ant-test")
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("ANTHROPIC_BASE_URL", raising=False)


def no_sleep(log: list[float]) -> RetryPolicy:
    return RetryPolicy(max_retries=3, base_delay_s=0.5, sleep=log.append)


def test_openai_sends_tools_and_parses_multi_tool_turn(keys: None) -> None:
    reply = openai_completion(
        {
            "content": None,
            "tool_calls": [
                {
                    "id": "c1",
                    "type": "function",
                    "function": {"name": "read_file", "arguments": '{"path": "a.cpp"}'},
                },
                {"id": "c2", "type": "function", "function": {"name": "build", "arguments": "{}"}},
            ],
        },
        "tool_calls",
    )
    server = Server([(200, reply)])
    provider = OpenAIProvider("gpt-test", http_client=server.client())
    response = provider.complete(conversation())

    sent = server.body(0)
    assert server.requests[0].url.path.endswith("/chat/completions")
    assert server.requests[0].headers["authorization"] == "Bearer sk-test"
    assert sent["model"] == "gpt-test"
    assert sent["max_completion_tokens"] == 512
    assert [t["function"]["name"] for t in sent["tools"]] == ["read_file", "build"]
    assert sent["tools"][0]["type"] == "function"
    assert sent["tools"][0]["function"]["parameters"]["required"] == ["path"]
    roles = [m["role"] for m in sent["messages"]]
    assert roles == ["system", "user", "assistant", "tool", "tool"]
    assert sent["messages"][2]["tool_calls"][0]["function"] == {
        "name": "read_file",
        "arguments": '{"path": "cpp/model.cpp"}',
    }
    assert sent["messages"][4]["tool_call_id"] == "call_b"
    assert sent["messages"][4]["content"].startswith("ERROR: ")

    assert response.stop_reason == "tool_use"
    assert response.tool_calls == (
        ToolCall("c1", "read_file", {"path": "a.cpp"}),
        ToolCall("c2", "build", {}),
    )
    assert (response.usage.input_tokens, response.usage.output_tokens) == (120, 17)


def test_openai_refusal_and_bad_arguments(keys: None) -> None:
    refusal = openai_completion({"content": None, "refusal": "I can't help with that."}, "stop")
    bad_args = openai_completion(
        {
            "content": None,
            "tool_calls": [
                {"id": "c9", "type": "function", "function": {"name": "build", "arguments": "{oops"}}
            ],
        },
        "tool_calls",
    )
    server = Server([(200, refusal), (200, bad_args)])
    provider = OpenAIProvider("gpt-test", http_client=server.client())
    first = provider.complete(Request("s", (Message.user("hi"),), (BUILD,)))
    assert first.stop_reason == "refusal"
    assert first.text == "I can't help with that."
    second = provider.complete(Request("s", (Message.user("hi"),), (BUILD,)))
    assert second.tool_calls[0].arguments == {"_raw_arguments": "{oops"}


def test_anthropic_sends_tools_and_parses_multi_tool_turn(keys: None) -> None:
    reply = anthropic_message(
        [
            {"type": "text", "text": "Reading and building."},
            {"type": "tool_use", "id": "tu1", "name": "read_file", "input": {"path": "b.cpp"}},
            {"type": "tool_use", "id": "tu2", "name": "build", "input": {}},
        ],
        "tool_use",
    )
    server = Server([(200, reply)])
    provider = AnthropicProvider("claude-test", http_client=server.client())
    response = provider.complete(conversation())

    sent = server.body(0)
    assert server.requests[0].url.path.endswith("/v1/messages")
    headers = server.requests[0].headers
    assert "sk-ant-test" in (headers.get("x-api-key", "") + headers.get("authorization", ""))
    assert sent["system"] == "You port PyTorch modules to GGML."
    assert sent["max_tokens"] == 512
    assert [t["name"] for t in sent["tools"]] == ["read_file", "build"]
    assert sent["tools"][0]["input_schema"]["required"] == ["path"]
    # user, assistant(text + 2 tool_use), one user turn holding both tool results
    assert [m["role"] for m in sent["messages"]] == ["user", "assistant", "user"]
    assert [b["type"] for b in sent["messages"][1]["content"]] == ["text", "tool_use", "tool_use"]
    results = sent["messages"][2]["content"]
    assert [(b["tool_use_id"], b.get("is_error", False)) for b in results] == [
        ("call_a", False),
        ("call_b", True),
    ]

    assert response.text == "Reading and building."
    assert response.stop_reason == "tool_use"
    assert [c.name for c in response.tool_calls] == ["read_file", "build"]
    assert response.tool_calls[0].arguments == {"path": "b.cpp"}
    assert (response.usage.input_tokens, response.usage.output_tokens) == (200, 31)


def test_anthropic_refusal(keys: None) -> None:
    server = Server([(200, anthropic_message([{"type": "text", "text": "No."}], "refusal"))])
    response = AnthropicProvider("claude-test", http_client=server.client()).complete(
        Request("s", (Message.user("x"),))
    )
    assert response.stop_reason == "refusal"
    assert response.raw_stop_reason == "refusal"
    assert response.text == "No."


@pytest.mark.parametrize("which", ["openai", "anthropic"])
def test_retries_on_429_and_500_then_succeeds(keys: None, which: str) -> None:
    ok = (
        openai_completion({"content": "done"}, "stop")
        if which == "openai"
        else anthropic_message([{"type": "text", "text": "done"}], "end_turn")
    )
    error = {"error": {"type": "rate_limit_error", "message": "slow down"}}
    server = Server([(429, error), (500, {"error": {"message": "boom"}}), (200, ok)])
    sleeps: list[float] = []
    cls = OpenAIProvider if which == "openai" else AnthropicProvider
    provider = cls("m", http_client=server.client(), retry=no_sleep(sleeps))
    response = provider.complete(Request("s", (Message.user("go"),)))
    assert response.text == "done"
    assert len(server.requests) == 3
    assert sleeps == [0.5, 1.0]  # exponential backoff


@pytest.mark.parametrize("which", ["openai", "anthropic"])
def test_gives_up_after_max_retries_and_does_not_retry_400(keys: None, which: str) -> None:
    cls = OpenAIProvider if which == "openai" else AnthropicProvider
    busy = Server([(503, {"error": {"message": "busy"}})] * 4)
    sleeps: list[float] = []
    with pytest.raises(LLMError, match="after 4 attempts.*HTTP 503"):
        cls("m", http_client=busy.client(), retry=no_sleep(sleeps)).complete(
            Request("s", (Message.user("go"),))
        )
    assert len(busy.requests) == 4
    assert sleeps == [0.5, 1.0, 2.0]

    bad = Server([(400, {"error": {"message": "bad schema"}})])
    with pytest.raises(LLMError, match="HTTP 400"):
        cls("m", http_client=bad.client(), retry=no_sleep([])).complete(Request("s", (Message.user("go"),)))
    assert len(bad.requests) == 1


@pytest.mark.parametrize(
    ("cls", "var"), [(OpenAIProvider, "OPENAI_API_KEY"), (AnthropicProvider, "ANTHROPIC_API_KEY")]
)
def test_missing_key_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, cls: type, var: str
) -> None:
    monkeypatch.delenv(var, raising=False)
    with pytest.raises(LLMError) as info:
        cls("m")
    message = str(info.value)
    assert var in message
    assert "\n" not in message


def test_base_url_from_environment(keys: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_BASE_URL", "http://llm.internal:8080/v1")
    server = Server([(200, openai_completion({"content": "hi"}, "stop"))])
    OpenAIProvider("m", http_client=server.client()).complete(Request("s", (Message.user("x"),)))
    assert str(server.requests[0].url) == "http://llm.internal:8080/v1/chat/completions"
