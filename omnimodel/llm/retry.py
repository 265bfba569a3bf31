"""Retry an SDK call with exponential backoff on rate limits, 5xx and connection errors."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TypeVar

from omnimodel.errors import LLMError

log = logging.getLogger(__name__)
T = TypeVar("T")


@dataclass
class RetryPolicy:
    """How often and how long to retry; `sleep` is injectable so tests do not wait."""

    max_retries: int = 5
    base_delay_s: float = 1.0
    max_delay_s: float = 60.0
    sleep: Callable[[float], None] = field(default=time.sleep)

    def delay(self, attempt: int, retry_after: float | None) -> float:
        """Seconds to wait before retry number `attempt` (0-based), honouring Retry-After."""
        backoff = min(self.max_delay_s, self.base_delay_s * (2**attempt))
        if retry_after is not None:
            return min(self.max_delay_s, max(backoff, retry_after))
        return backoff


def status_of(exc: BaseException) -> int | None:
    """The HTTP status of an SDK status error, or None for other errors."""
    status = getattr(exc, "status_code", None)
    return status if isinstance(status, int) else None


def retry_after_of(exc: BaseException) -> float | None:
    """The Retry-After header of an SDK status error in seconds, when it is a number."""
    response = getattr(exc, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    value = headers.get("retry-after")
    try:
        return float(value) if value is not None else None
    except ValueError:
        return None


def is_retryable(exc: BaseException, connection_errors: tuple[type[BaseException], ...]) -> bool:
    """True for 408/409/429, any 5xx, and connection or timeout errors."""
    status = status_of(exc)
    if status is not None:
        return status in (408, 409, 429) or status >= 500
    return isinstance(exc, connection_errors)


def call_with_retries(
    call: Callable[[], T],
    *,
    what: str,
    policy: RetryPolicy,
    sdk_errors: tuple[type[BaseException], ...],
    connection_errors: tuple[type[BaseException], ...],
) -> T:
    """Run `call`; retry retryable SDK errors with backoff; raise LLMError when it gives up."""
    attempt = 0
    while True:
        try:
            return call()
        except sdk_errors as exc:
            status = status_of(exc)
            label = f"HTTP {status}" if status is not None else type(exc).__name__
            detail = _one_line(str(exc))
            if not is_retryable(exc, connection_errors):
                raise LLMError(f"{what} failed ({label}): {detail}") from exc
            if attempt >= policy.max_retries:
                raise LLMError(
                    f"{what} failed after {attempt + 1} attempts ({label}): {detail}; "
                    "try again later or raise the retry limit"
                ) from exc
            wait = policy.delay(attempt, retry_after_of(exc))
            log.warning("%s: %s, retry %d/%d in %.1f s", what, label, attempt + 1, policy.max_retries, wait)
            policy.sleep(wait)
            attempt += 1


def _one_line(text: str, limit: int = 300) -> str:
    """Collapse whitespace and cut to `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."
