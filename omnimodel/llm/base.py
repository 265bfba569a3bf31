"""Provider-neutral request and response shapes for LLM calls with tool use."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, runtime_checkable

Role = Literal["user", "assistant", "tool"]
StopReason = Literal["end_turn", "tool_use", "max_tokens", "refusal", "other"]


@dataclass(frozen=True)
class ToolSpec:
    """A tool the model may call: a name, what it does, and a JSON schema of its arguments."""

    name: str
    description: str
    parameters: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used in transcripts."""
        return {"name": self.name, "description": self.description, "parameters": self.parameters}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolSpec:
        """Read the JSON form written by `to_dict`."""
        return cls(data["name"], data.get("description", ""), dict(data.get("parameters") or {}))


@dataclass(frozen=True)
class ToolCall:
    """One call the model asked for: an id to answer with, the tool name and parsed arguments."""

    id: str
    name: str
    arguments: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used in transcripts."""
        return {"id": self.id, "name": self.name, "arguments": self.arguments}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ToolCall:
        """Read the JSON form written by `to_dict`."""
        return cls(str(data.get("id", "")), data["name"], dict(data.get("arguments") or {}))


@dataclass(frozen=True)
class Message:
    """One turn: user text, assistant text and tool calls, or a tool result (role "tool")."""

    role: Role
    content: str = ""
    tool_calls: tuple[ToolCall, ...] = ()
    tool_call_id: str | None = None
    is_error: bool = False

    @classmethod
    def user(cls, text: str) -> Message:
        """A user turn holding plain text."""
        return cls("user", text)

    @classmethod
    def assistant(cls, text: str = "", tool_calls: list[ToolCall] | tuple[ToolCall, ...] = ()) -> Message:
        """An assistant turn, as returned by a provider, to append to the conversation."""
        return cls("assistant", text, tuple(tool_calls))

    @classmethod
    def tool_result(cls, tool_call_id: str, content: str, is_error: bool = False) -> Message:
        """The result of one tool call, answering the call with id `tool_call_id`."""
        return cls("tool", content, (), tool_call_id, is_error)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used in transcripts (empty fields left out)."""
        out: dict[str, Any] = {"role": self.role, "content": self.content}
        if self.tool_calls:
            out["tool_calls"] = [c.to_dict() for c in self.tool_calls]
        if self.tool_call_id is not None:
            out["tool_call_id"] = self.tool_call_id
        if self.is_error:
            out["is_error"] = True
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Message:
        """Read the JSON form written by `to_dict`."""
        calls = tuple(ToolCall.from_dict(c) for c in data.get("tool_calls") or ())
        return cls(
            data["role"],
            data.get("content") or "",
            calls,
            data.get("tool_call_id"),
            bool(data.get("is_error", False)),
        )


@dataclass(frozen=True)
class Request:
    """What the agent asks: a system prompt, the conversation, the tools and an output cap.

    `model` is normally left None (the provider's own model is used); a caller may pin it.
    """

    system: str
    messages: tuple[Message, ...]
    tools: tuple[ToolSpec, ...] = ()
    max_tokens: int = 4096
    model: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "messages", tuple(self.messages))
        object.__setattr__(self, "tools", tuple(self.tools))

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used in transcripts."""
        return {
            "model": self.model,
            "system": self.system,
            "messages": [m.to_dict() for m in self.messages],
            "tools": [t.to_dict() for t in self.tools],
            "max_tokens": self.max_tokens,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Request:
        """Read the JSON form written by `to_dict`."""
        return cls(
            system=data.get("system") or "",
            messages=tuple(Message.from_dict(m) for m in data.get("messages") or ()),
            tools=tuple(ToolSpec.from_dict(t) for t in data.get("tools") or ()),
            max_tokens=int(data.get("max_tokens") or 4096),
            model=data.get("model"),
        )


@dataclass(frozen=True)
class Usage:
    """Tokens one call consumed."""

    input_tokens: int = 0
    output_tokens: int = 0


@dataclass(frozen=True)
class Response:
    """What the model answered: text, tool calls, why it stopped, and the tokens it used."""

    text: str
    tool_calls: tuple[ToolCall, ...] = ()
    stop_reason: StopReason = "end_turn"
    usage: Usage = field(default_factory=Usage)
    model: str = ""
    raw_stop_reason: str = ""

    def __post_init__(self) -> None:
        object.__setattr__(self, "tool_calls", tuple(self.tool_calls))

    def as_message(self) -> Message:
        """The assistant turn to append to the conversation before sending tool results."""
        return Message.assistant(self.text, self.tool_calls)

    def to_dict(self) -> dict[str, Any]:
        """The JSON form used in transcripts."""
        return {
            "text": self.text,
            "tool_calls": [c.to_dict() for c in self.tool_calls],
            "stop_reason": self.stop_reason,
            "raw_stop_reason": self.raw_stop_reason,
            "usage": {"input_tokens": self.usage.input_tokens, "output_tokens": self.usage.output_tokens},
            "model": self.model,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Response:
        """Read the JSON form written by `to_dict`."""
        usage = data.get("usage") or {}
        return cls(
            text=data.get("text") or "",
            tool_calls=tuple(ToolCall.from_dict(c) for c in data.get("tool_calls") or ()),
            stop_reason=data.get("stop_reason") or "end_turn",
            usage=Usage(int(usage.get("input_tokens", 0)), int(usage.get("output_tokens", 0))),
            model=data.get("model") or "",
            raw_stop_reason=data.get("raw_stop_reason") or "",
        )


@runtime_checkable
class Provider(Protocol):
    """Anything that answers a Request: live SDK providers, recorders, replayers, meters."""

    name: str
    model: str

    def complete(self, request: Request) -> Response:
        """Send one request and return the model's answer (raises LLMError on failure)."""
        ...
