"""The Anthropic provider: the Messages API with tool use through the official SDK."""

from __future__ import annotations

import os
from typing import Any

from omnimodel.errors import LLMError
from omnimodel.llm.base import Message, Request, Response, StopReason, ToolCall, Usage
from omnimodel.llm.openai_provider import require_env
from omnimodel.llm.retry import RetryPolicy, call_with_retries

KEY_ENV = "ANTHROPIC_API_KEY"
BASE_URL_ENV = "ANTHROPIC_BASE_URL"

_STOP_REASONS: dict[str, StopReason] = {
    "end_turn": "end_turn",
    "stop_sequence": "end_turn",
    "tool_use": "tool_use",
    "max_tokens": "max_tokens",
    "model_context_window_exceeded": "max_tokens",
    "refusal": "refusal",
}


class AnthropicProvider:
    """Answers requests with a Claude model; retries 429/5xx/529 itself (SDK retries off)."""

    name = "anthropic"

    def __init__(
        self,
        model: str,
        *,
        retry: RetryPolicy | None = None,
        timeout_s: float = 600.0,
        http_client: Any = None,
    ) -> None:
        import anthropic

        self.model = model
        self.retry = retry or RetryPolicy()
        self._anthropic = anthropic
        self._client = anthropic.Anthropic(
            api_key=require_env(KEY_ENV, "anthropic"),
            base_url=os.environ.get(BASE_URL_ENV) or None,
            max_retries=0,
            timeout=timeout_s,
            http_client=http_client,
        )

    def complete(self, request: Request) -> Response:
        """Send one Messages request with tools and parse the content blocks."""
        model = request.model or self.model
        kwargs: dict[str, Any] = {
            "model": model,
            "max_tokens": request.max_tokens,
            "messages": to_anthropic_messages(request.messages),
        }
        if request.system:
            kwargs["system"] = request.system
        if request.tools:
            kwargs["tools"] = [
                {"name": t.name, "description": t.description, "input_schema": t.parameters}
                for t in request.tools
            ]
        err = self._anthropic
        message = call_with_retries(
            lambda: self._client.messages.create(**kwargs),
            what=f"anthropic:{model}",
            policy=self.retry,
            sdk_errors=(err.APIError,),
            connection_errors=(err.APIConnectionError,),
        )
        return parse_message(message, model)


def to_anthropic_messages(messages: tuple[Message, ...]) -> list[dict[str, Any]]:
    """Our conversation as Messages API turns; consecutive tool results share one user turn."""
    out: list[dict[str, Any]] = []
    for msg in messages:
        if msg.role == "tool":
            block = {"type": "tool_result", "tool_use_id": msg.tool_call_id or "", "content": msg.content}
            if msg.is_error:
                block["is_error"] = True
            if (
                out
                and out[-1]["role"] == "user"
                and isinstance(out[-1]["content"], list)
                and all(b.get("type") == "tool_result" for b in out[-1]["content"])
            ):
                out[-1]["content"].append(block)
            else:
                out.append({"role": "user", "content": [block]})
        elif msg.role == "assistant":
            blocks: list[dict[str, Any]] = []
            if msg.content:
                blocks.append({"type": "text", "text": msg.content})
            for call in msg.tool_calls:
                blocks.append({"type": "tool_use", "id": call.id, "name": call.name, "input": call.arguments})
            out.append({"role": "assistant", "content": blocks or [{"type": "text", "text": ""}]})
        else:
            out.append({"role": "user", "content": msg.content})
    return out


def parse_message(message: Any, model: str) -> Response:
    """Our Response from an SDK Message (text blocks joined, tool_use blocks as calls)."""
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in message.content or ():
        kind = getattr(block, "type", "")
        if kind == "text":
            texts.append(block.text)
        elif kind == "tool_use":
            args = block.input if isinstance(block.input, dict) else {"_raw_arguments": block.input}
            calls.append(ToolCall(block.id, block.name, dict(args)))
    raw_reason = message.stop_reason or ""
    stop = _STOP_REASONS.get(raw_reason, "other")
    if calls and stop == "end_turn":
        stop = "tool_use"
    usage = message.usage
    if usage is None:
        raise LLMError(f"anthropic:{model} returned no usage; the response is malformed")
    return Response(
        text="\n".join(texts),
        tool_calls=tuple(calls),
        stop_reason=stop,
        usage=Usage(usage.input_tokens or 0, usage.output_tokens or 0),
        model=message.model or model,
        raw_stop_reason=raw_reason,
    )
