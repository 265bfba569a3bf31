"""LLM providers with tool calling, record/replay transcripts and the per-run budget."""

from __future__ import annotations

from pathlib import Path

from omnimodel.errors import LLMError
from omnimodel.llm.base import Message, Provider, Request, Response, ToolCall, ToolSpec, Usage
from omnimodel.llm.budget import Accounting, Budget, BudgetExceeded, MeteredProvider

__all__ = [
    "Accounting",
    "Budget",
    "BudgetExceeded",
    "LLMError",
    "Message",
    "MeteredProvider",
    "Provider",
    "Request",
    "Response",
    "ToolCall",
    "ToolSpec",
    "Usage",
    "make_provider",
]

LIVE_PROVIDERS = ("openai", "anthropic")


def _live_provider(name: str, model: str) -> Provider:
    """A live SDK provider by name."""
    if not model:
        raise LLMError(f"--llm {name}: needs a model, e.g. {name}:MODEL")
    if name == "openai":
        from omnimodel.llm.openai_provider import OpenAIProvider

        return OpenAIProvider(model)
    if name == "anthropic":
        from omnimodel.llm.anthropic_provider import AnthropicProvider

        return AnthropicProvider(model)
    raise LLMError(f"unknown LLM provider {name!r}; use one of {', '.join(LIVE_PROVIDERS)}, record:, replay:")


def make_provider(spec: str, run_dir: Path, budget: Budget | None = None) -> MeteredProvider:
    """A metered provider for `openai:MODEL`, `anthropic:MODEL`, `record:PROVIDER:MODEL` or `replay:FILE`."""
    kind, _, rest = spec.partition(":")
    if kind == "replay":
        from omnimodel.llm.replay import ReplayProvider

        if not rest:
            raise LLMError("--llm replay: needs a transcript, e.g. replay:tests/fixtures/run.jsonl")
        inner: Provider = ReplayProvider(Path(rest), run_dir)
    elif kind == "record":
        from omnimodel.llm.record import RecordingProvider

        name, _, model = rest.partition(":")
        inner = RecordingProvider(_live_provider(name, model), run_dir)
    else:
        inner = _live_provider(kind, rest)
    return MeteredProvider(inner, budget)
