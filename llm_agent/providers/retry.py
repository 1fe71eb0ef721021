"""When and how long to wait before calling the upstream again.

Only errors marked `retryable` are retried (connection errors, timeouts, 408,
429, 5xx); the wait is exponential with full jitter, or the upstream's
`Retry-After` when it gives one. A `Retry-After` longer than the caller would
reasonably wait ends the retries so the 429 reaches the caller at once.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import TypeVar

from loguru import logger

from llm_agent.errors import AgentError

T = TypeVar("T")


@dataclass(frozen=True)
class RetryPolicy:
    max_attempts: int = 4
    base_delay: float = 0.5
    max_delay: float = 8.0
    retry_after_max: float = 30.0
    rng: random.Random = field(default_factory=random.Random, compare=False)

    def delay_before_retry(self, attempt: int, error: AgentError) -> float | None:
        """Seconds to wait before attempt `attempt + 1`, or None to give up."""
        if not error.retryable or attempt >= self.max_attempts:
            return None
        if error.retry_after is not None:
            return error.retry_after if error.retry_after <= self.retry_after_max else None
        ceiling = min(self.max_delay, self.base_delay * 2 ** (attempt - 1))
        return self.rng.uniform(0, ceiling)

    async def backoff(
        self,
        attempt: int,
        error: AgentError,
        on_retry: Callable[[AgentError], None] | None = None,
    ) -> None:
        """Wait before attempt `attempt + 1`, or re-raise `error` when none is due."""
        delay = self.delay_before_retry(attempt, error)
        if delay is None:
            raise error
        logger.warning(
            "upstream attempt {} failed ({}: {}); retrying in {:.2f}s",
            attempt,
            error.code,
            error.message,
            delay,
        )
        if on_retry is not None:
            on_retry(error)
        await asyncio.sleep(delay)

    async def run(
        self,
        call: Callable[[], Awaitable[T]],
        on_retry: Callable[[AgentError], None] | None = None,
    ) -> T:
        attempt = 1
        while True:
            try:
                return await call()
            except AgentError as error:
                await self.backoff(attempt, error, on_retry)
                attempt += 1


def parse_retry_after(headers: dict[str, str] | None, now: datetime | None = None) -> float | None:
    """Seconds from `retry-after-ms` or `Retry-After` (delta-seconds or an HTTP date)."""
    if not headers:
        return None
    lowered = {k.lower(): v for k, v in headers.items()}
    if (ms := lowered.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    value = lowered.get("retry-after")
    if value is None:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())
