"""The retry policy: which errors, how long, how many times."""

from __future__ import annotations

import random
from datetime import UTC, datetime

import pytest

from llm_agent.errors import (
    AgentError,
    InvalidRequest,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from llm_agent.providers.retry import RetryPolicy, parse_retry_after


def policy(**kwargs: object) -> RetryPolicy:
    return RetryPolicy(rng=random.Random(7), **kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "error",
    [
        UpstreamError("5xx", retryable=True),
        UpstreamTimeout("slow"),
        UpstreamRateLimited("429"),
    ],
)
def test_transient_errors_are_retried(error: AgentError) -> None:
    assert policy().delay_before_retry(1, error) is not None


@pytest.mark.parametrize(
    "error",
    [
        UpstreamAuthFailed("401"),
        UpstreamError("400", retryable=False),
        InvalidRequest("bad"),
    ],
)
def test_permanent_errors_are_not_retried(error: AgentError) -> None:
    assert policy().delay_before_retry(1, error) is None


def test_attempts_are_bounded() -> None:
    p = policy(max_attempts=4)
    error = UpstreamTimeout("slow")
    assert [p.delay_before_retry(n, error) is not None for n in (1, 2, 3, 4)] == [
        True,
        True,
        True,
        False,
    ]


def test_backoff_is_exponential_with_full_jitter_and_capped() -> None:
    p = policy(base_delay=0.5, max_delay=3.0)
    error = UpstreamTimeout("slow")
    for attempt, ceiling in [(1, 0.5), (2, 1.0), (3, 2.0), (4, 3.0), (6, 3.0)]:
        delays = [
            policy(base_delay=0.5, max_delay=3.0, max_attempts=10).delay_before_retry(
                attempt, error
            )
            for _ in range(50)
        ]
        assert all(d is not None and 0 <= d <= ceiling for d in delays)
    # jitter: not every draw is the same
    draws = {p.delay_before_retry(1, error) for _ in range(20)}
    assert len(draws) > 1


def test_retry_after_is_honoured_within_the_limit() -> None:
    error = UpstreamRateLimited("429", retry_after=2.5)
    assert policy(retry_after_max=30).delay_before_retry(1, error) == 2.5


def test_retry_after_beyond_the_limit_gives_up_at_once() -> None:
    error = UpstreamRateLimited("429", retry_after=120)
    assert policy(retry_after_max=30).delay_before_retry(1, error) is None


async def test_run_counts_attempts_and_reports_retries() -> None:
    calls = 0
    retried: list[str] = []

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise UpstreamError("boom", retryable=True)
        return "ok"

    result = await policy(base_delay=0.001, max_delay=0.001).run(
        flaky, on_retry=lambda e: retried.append(e.code)
    )
    assert (result, calls, retried) == ("ok", 3, ["upstream_error", "upstream_error"])


async def test_run_reraises_after_the_last_attempt() -> None:
    calls = 0

    async def always_down() -> None:
        nonlocal calls
        calls += 1
        raise UpstreamTimeout("slow")

    with pytest.raises(UpstreamTimeout):
        await policy(max_attempts=3, base_delay=0.001, max_delay=0.001).run(always_down)
    assert calls == 3


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"Retry-After": "3"}, 3.0),
        ({"retry-after": "1.5"}, 1.5),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({"Retry-After": "Tue, 24 Nov 2026 12:00:10 GMT"}, 10.0),
        ({"Retry-After": "Tue, 24 Nov 2026 11:00:00 GMT"}, 0.0),
        ({"Retry-After": "soon"}, None),
        ({}, None),
        (None, None),
    ],
)
def test_parse_retry_after(headers: dict[str, str] | None, expected: float | None) -> None:
    now = datetime(2026, 11, 24, 12, 0, 0, tzinfo=UTC)
    assert parse_retry_after(headers, now=now) == expected
