"""The run's LLM provider: make_provider plus in-process providers registered by name (scripted fakes).

`register_provider("scripted", factory)` lets `--llm scripted:MODEL` or `--llm record:scripted:MODEL`
use a provider built in this process (tests/fixtures/make_*.py drive the real agent with one).
The provider continues the run's accounting across node visits (and a replay its position).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from omnimodel.llm import Accounting, Budget, MeteredProvider, Provider, make_provider

_FACTORIES: dict[str, Callable[[str], Provider]] = {}


def register_provider(name: str, factory: Callable[[str], Provider]) -> None:
    """Make `name:MODEL` (and `record:name:MODEL`) build `factory(MODEL)`."""
    _FACTORIES[name] = factory


def unregister_provider(name: str) -> None:
    """Forget a registered provider."""
    _FACTORIES.pop(name, None)


def run_provider(spec: str, run_dir: Path, budget: Budget | None, accounting: Accounting) -> MeteredProvider:
    """A metered provider for `spec` that continues `accounting` (a replay resumes after the answered calls)."""
    kind, _, rest = spec.partition(":")
    name, _, model = rest.partition(":")
    if kind == "record" and name in _FACTORIES:
        from omnimodel.llm.record import RecordingProvider

        return MeteredProvider(RecordingProvider(_FACTORIES[name](model), run_dir), budget, accounting)
    if kind in _FACTORIES:
        return MeteredProvider(_FACTORIES[kind](rest), budget, accounting)
    provider = make_provider(spec, run_dir, budget)
    provider.accounting = accounting
    inner = provider.inner
    if hasattr(inner, "position") and hasattr(inner, "entries"):  # replay: skip what earlier visits used
        inner.position = min(accounting.calls, len(inner.entries))
    return provider
