"""The OpenAI provider: Chat Completions with function tools through the official SDK."""

from __future__ import annotations

import json
import os
from typing import Any

from omnimodel.errors import LLMError
from omnimodel.llm.base import Message, Request, Response, StopReason, ToolCall, Usage
from omnimodel.llm.retry import RetryPolicy, call_with_retries

KEY_ENV = "OPENAI_API_KEY"
BASE_URL_ENV = "OPENAI_BASE_URL"

_STOP_REASONS: dict[str, StopReason] = {
    "stop": "end_turn",
    "tool_calls": "tool_use",
    "function_call": "tool_use",
    "length": "max_tokens",
    "content_filter": "refusal",
}


def require_env(name: str, provider: str) -> str:
    """The value of environment variable `name`, or an LLMError naming it."""
    value = os.environ.get(name, "").strip()
    if not value:
        raise LLMError(
            f"{name} is not set: export it to use the {provider} provider, or use --llm replay:FILE"
        )
    return value


class OpenAIProvider:
    """Answers requests with an OpenAI chat model; retries 429/5xx itself (SDK retries off)."""

    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        retry: RetryPolicy | None = None,
        timeout_s: float = 600.0,
        http_client: Any = None,
    ) -> None:
        import openai

        self.model = model
        self.retry = retry or RetryPolicy()
        self._openai = openai
        self._client = openai.OpenAI(
            api_key=require_env(KEY_ENV, "openai"),
            base_url=os.environ.get(BASE_URL_ENV) or None,
            max_retries=0,
            timeout=timeout_s,
            http_client=http_client,
        )

    def complete(self, request: Request) -> Response:
        """Send one chat completion request with tools and parse the first choice."""
        model = request.model or self.model
        kwargs: dict[str, Any] = {
            "model": model,
            "messages": to_openai_messages(request),
            "max_completion_tokens": request.max_tokens,
        }
        if request.tools:
            kwargs["tools"] = [
                {
                    "type": "function",
                    "function": {"name": t.name, "description": t.description, "parameters": t.parameters},
                }
                for t in request.tools
            ]
        err = self._openai
        completion = call_with_retries(
            lambda: self._client.chat.completions.create(**kwargs),
            what=f"openai:{model}",
            policy=self.retry,
            sdk_errors=(err.APIError,),
            connection_errors=(err.APIConnectionError,),
        )
        return parse_completion(completion, model)


def to_openai_messages(request: Request) -> list[dict[str, Any]]:
    """Our conversation in Chat Completions form (system first, tool results as role "tool")."""
    out: list[dict[str, Any]] = []
    if request.system:
        out.append({"role": "system", "content": request.system})
    for msg in request.messages:
        out.append(_to_openai_message(msg))
    return out


def _to_openai_message(msg: Message) -> dict[str, Any]:
    if msg.role == "tool":
        content = ("ERROR: " + msg.content) if msg.is_error else msg.content
        return {"role": "tool", "tool_call_id": msg.tool_call_id or "", "content": content}
    if msg.role == "assistant":
        entry: dict[str, Any] = {"role": "assistant", "content": msg.content or None}
        if msg.tool_calls:
            entry["tool_calls"] = [
                {
                    "id": c.id,
                    "type": "function",
                    "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                }
                for c in msg.tool_calls
            ]
        return entry
    return {"role": "user", "content": msg.content}


def parse_arguments(raw: str | None) -> dict[str, Any]:
    """Tool arguments from a JSON string; invalid JSON is kept under "_raw_arguments" for feedback."""
    if not raw:
        return {}
    try:
        value = json.loads(raw)
    except json.JSONDecodeError:
        return {"_raw_arguments": raw}
    return value if isinstance(value, dict) else {"_raw_arguments": raw}


def parse_completion(completion: Any, model: str) -> Response:
    """Our Response from an SDK ChatCompletion (text, tool calls, refusal, usage)."""
    if not completion.choices:
        raise LLMError(f"openai:{model} returned no choices; retry or check the model name")
    choice = completion.choices[0]
    message = choice.message
    raw_reason = choice.finish_reason or ""
    stop: StopReason = _STOP_REASONS.get(raw_reason, "other")
    text = message.content or ""
    if getattr(message, "refusal", None):
        stop, text = "refusal", message.refusal
    calls = []
    for tc in message.tool_calls or ():
        function = getattr(tc, "function", None)
        if function is None:  # custom (non-function) tools are not used by the agent
            continue
        calls.append(ToolCall(tc.id, function.name, parse_arguments(function.arguments)))
    if calls and stop == "end_turn":
        stop = "tool_use"
    usage = completion.usage
    return Response(
        text=text,
        tool_calls=tuple(calls),
        stop_reason=stop,
        usage=Usage(getattr(usage, "prompt_tokens", 0) or 0, getattr(usage, "completion_tokens", 0) or 0),
        model=completion.model or model,
        raw_stop_reason=raw_reason,
    )
