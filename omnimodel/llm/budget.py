"""Per-run LLM budget (calls, tokens, wall time) and the token accounting for report.json."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from omnimodel.errors import LLMError
from omnimodel.llm.base import Provider, Request, Response


class BudgetExceeded(LLMError):
    """The run's LLM budget is spent; the agent loop stops cleanly and reports the last diagnosis."""


@dataclass
class Accounting:
    """Calls and tokens used so far; `as_report()` is report.json's `llm` entry."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0

    def add(self, response: Response) -> None:
        """Count one answered call."""
        self.calls += 1
        self.input_tokens += response.usage.input_tokens
        self.output_tokens += response.usage.output_tokens

    @property
    def tokens(self) -> int:
        """Input plus output tokens."""
        return self.input_tokens + self.output_tokens

    def as_report(self) -> dict[str, int]:
        """The `llm: {calls, input_tokens, output_tokens}` entry of report.json."""
        return {"calls": self.calls, "input_tokens": self.input_tokens, "output_tokens": self.output_tokens}


@dataclass
class Budget:
    """Limits for one run; None means unlimited. The wall clock starts when the budget is made."""

    max_calls: int | None = 40
    max_tokens: int | None = 2_000_000
    max_wall_s: float | None = 3600.0
    clock: Callable[[], float] = field(default=time.monotonic)
    started: float = field(default=-1.0)

    def __post_init__(self) -> None:
        if self.started < 0:
            self.started = self.clock()

    def check(self, used: Accounting) -> None:
        """Raise BudgetExceeded when another call would go over a limit."""
        if self.max_calls is not None and used.calls >= self.max_calls:
            raise BudgetExceeded(
                f"LLM budget spent: {used.calls} of {self.max_calls} calls; raise --llm-max-calls"
            )
        if self.max_tokens is not None and used.tokens >= self.max_tokens:
            raise BudgetExceeded(
                f"LLM budget spent: {used.tokens} of {self.max_tokens} tokens; raise --llm-max-tokens"
            )
        elapsed = self.clock() - self.started
        if self.max_wall_s is not None and elapsed >= self.max_wall_s:
            raise BudgetExceeded(
                f"LLM budget spent: {elapsed:.0f} s of {self.max_wall_s:.0f} s wall time; raise --llm-max-seconds"
            )


class MeteredProvider:
    """Wraps any provider: checks the budget before each call and counts calls and tokens."""

    def __init__(
        self, inner: Provider, budget: Budget | None = None, accounting: Accounting | None = None
    ) -> None:
        self.inner = inner
        self.name = inner.name
        self.model = inner.model
        self.budget = budget
        self.accounting = accounting or Accounting()

    def complete(self, request: Request) -> Response:
        """Check the budget, forward the request, count the answer."""
        if self.budget is not None:
            self.budget.check(self.accounting)
        response = self.inner.complete(request)
        self.accounting.add(response)
        return response
