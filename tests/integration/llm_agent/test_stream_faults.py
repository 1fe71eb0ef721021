"""A stream cut off in any way ends with exactly one `error` event, never `done`."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from tests.fakes.openai_server import FakeOpenAI
from tests.integration.llm_agent.conftest import USER_HI, StartAgent
from tests.support.sse import Event, parse_sse

CHUNKS = ["alpha ", "beta ", "gamma ", "delta"]


def stream(agent: httpx.Client) -> list[Event]:
    response = agent.post("/generate/stream", json=USER_HI)
    assert response.status_code == 200
    return parse_sse(response.text)


def assert_cut_off(events: list[Event], deltas: int, code: str, retryable: bool) -> None:
    names = [e.event for e in events]
    assert names == ["delta"] * deltas + ["error"], names
    assert events[-1].data == {
        "code": code,
        "message": events[-1].data["message"],
        "retryable": retryable,
    }
    assert events[-1].data["message"]


@pytest.mark.parametrize(
    ("fault", "deltas", "code", "retryable"),
    [
        ({"drop_after": 2}, 2, "upstream_error", True),
        ({"truncate_after": 2}, 2, "upstream_error", True),
        ({"malformed_after": 2}, 2, "upstream_error", True),
        ({"omit_done": True}, 4, "upstream_error", True),
        ({"finish_reason": None}, 4, "upstream_error", True),
    ],
)
def test_faults_after_the_first_delta_end_with_one_error_and_no_retry(
    agent: httpx.Client,
    upstream: FakeOpenAI,
    fault: dict[str, Any],
    deltas: int,
    code: str,
    retryable: bool,
) -> None:
    upstream.script({"chunks": CHUNKS, **fault})
    events = stream(agent)
    assert_cut_off(events, deltas, code, retryable)
    assert "".join(e.data["text"] for e in events[:-1]) == "".join(CHUNKS[:deltas])
    # Text already went out: a retry would duplicate it.
    assert len(upstream.chat_requests) == 1


def test_a_stalled_stream_times_out_instead_of_hanging(
    start_agent: StartAgent, upstream: FakeOpenAI
) -> None:
    agent = start_agent(openai_read_timeout=0.5)
    upstream.script({"chunks": CHUNKS, "stall_after": 1, "stall_seconds": 10})
    events = stream(agent)
    assert_cut_off(events, 1, "upstream_timeout", True)


@pytest.mark.parametrize(
    "fault",
    [
        {"chunks": CHUNKS, "drop_after": 0},
        {"chunks": CHUNKS, "truncate_after": 0},
        {"chunks": CHUNKS, "malformed_after": 0},
        {"chunks": [], "omit_done": True},
        {"chunks": [], "finish_reason": None},
    ],
    ids=["dropped", "truncated", "malformed", "no-done", "no-finish-reason"],
)
def test_any_fault_before_the_first_delta_is_retried(
    agent: httpx.Client, upstream: FakeOpenAI, fault: dict[str, Any]
) -> None:
    """One rule for every stream fault: retried before the first delta, never after."""
    upstream.script(fault, {"chunks": CHUNKS})
    events = stream(agent)
    assert [e.event for e in events] == ["delta"] * 4 + ["done"]
    assert "".join(e.data["text"] for e in events[:-1]) == "".join(CHUNKS)
    assert len(upstream.chat_requests) == 2


def test_errors_are_counted_by_code(agent: httpx.Client, upstream: FakeOpenAI) -> None:
    upstream.script({"chunks": CHUNKS, "malformed_after": 1})
    stream(agent)
    assert 'llm_errors_total{code="upstream_error"} 1.0' in agent.get("/metrics").text
