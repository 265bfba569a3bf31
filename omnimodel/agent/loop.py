"""The tool-use loop: ask the model, run the tools it calls, feed the results back, until it stops."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Literal

from omnimodel.agent.tools import ToolBox
from omnimodel.llm.base import Message, Provider, Request
from omnimodel.llm.budget import BudgetExceeded

log = logging.getLogger(__name__)

Outcome = Literal["done", "budget", "refused", "max_turns", "max_tokens"]


@dataclass
class AgentResult:
    """How a session ended, the final text, the whole conversation and the error that stopped it, if any."""

    outcome: Outcome
    text: str = ""
    messages: list[Message] = field(default_factory=list)
    error: str = ""
    tool_calls: int = 0


def run_agent(
    provider: Provider,
    tools: ToolBox,
    system: str,
    task: str,
    *,
    history: list[Message] | None = None,
    max_turns: int = 30,
    max_tokens: int = 8192,
) -> AgentResult:
    """Run one agent session on `task`; a spent budget ends it cleanly with outcome "budget"."""
    messages = [*(history or []), Message.user(task)]
    specs = tools.specs()
    calls = 0
    for turn in range(max_turns):
        try:
            response = provider.complete(Request(system, tuple(messages), tuple(specs), max_tokens))
        except BudgetExceeded as exc:
            return AgentResult("budget", "", messages, str(exc), calls)
        messages.append(response.as_message())
        log.info("agent turn %d: %s, %d tool calls", turn + 1, response.stop_reason, len(response.tool_calls))
        if response.stop_reason == "refusal":
            return AgentResult("refused", response.text, messages, "the model refused the task", calls)
        if not response.tool_calls:
            outcome: Outcome = "max_tokens" if response.stop_reason == "max_tokens" else "done"
            return AgentResult(outcome, response.text, messages, "", calls)
        for call in response.tool_calls:
            calls += 1
            try:
                result = tools.execute(call)
            except BudgetExceeded as exc:
                return AgentResult("budget", "", messages, str(exc), calls)
            messages.append(Message.tool_result(call.id, result.content, result.is_error))
    return AgentResult("max_turns", "", messages, f"no answer after {max_turns} turns", calls)
