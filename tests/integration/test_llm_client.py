"""The main backend's LLM agent client against a real llm_agent over real HTTP.

The agent runs under uvicorn in a thread, in front of the wire-level fake OpenAI
upstream, so every fault below really happens on a socket.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import ExitStack
from typing import Any

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from llm_agent.app import create_app
from main_backend.api.errors import run_error_status
from main_backend.llm_client import LLMAgentClient, LLMDelta, LLMDone, LLMError
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.llm_agent.conftest import agent_settings
from tests.support.servers import free_port, serve_in_thread

HI = [{"role": "user", "content": "hi"}]
CHUNKS = ["alpha ", "beta ", "gamma ", "delta"]
StartAgent = Callable[..., str]
MakeClient = Callable[..., LLMAgentClient]


@pytest.fixture
def start_agent(upstream: FakeOpenAI) -> Iterator[StartAgent]:
    """Start an llm_agent with settings overrides; returns its base URL."""
    with ExitStack() as stack:

        def start(**overrides: Any) -> str:
            app = create_app(agent_settings(upstream.url, **overrides))
            return stack.enter_context(serve_in_thread(app))

        yield start


@pytest.fixture
async def make_client(start_agent: StartAgent) -> AsyncIterator[MakeClient]:
    """Clients are closed before the agents stop (this fixture depends on theirs)."""
    clients: list[LLMAgentClient] = []

    def make(
        base_url: str, timeout: float = 5.0, token: str | None = None, **pool: Any
    ) -> LLMAgentClient:
        clients.append(LLMAgentClient(base_url, timeout, token, **pool))
        return clients[-1]

    yield make
    for client in clients:
        await client.aclose()


@pytest.fixture
def client(start_agent: StartAgent, make_client: MakeClient) -> LLMAgentClient:
    return make_client(start_agent())


def call(client: LLMAgentClient, request_id: str | None = None) -> AsyncIterator[Any]:
    return client.stream(
        HI, model="gpt-4o-mini", temperature=0.5, max_tokens=None, request_id=request_id
    )


async def collect(client: LLMAgentClient) -> tuple[list[Any], LLMError | None]:
    items: list[Any] = []
    try:
        async for item in call(client):
            items.append(item)
    except LLMError as error:
        return items, error
    return items, None


async def test_deltas_arrive_in_order_then_one_done(
    client: LLMAgentClient, upstream: FakeOpenAI
) -> None:
    upstream.script({"chunks": CHUNKS})
    items, error = await collect(client)
    assert error is None
    assert [type(i) for i in items] == [LLMDelta] * 4 + [LLMDone]
    assert "".join(i.text for i in items[:-1]) == "alpha beta gamma delta"
    done = items[-1]
    assert (done.finish_reason, done.model) == ("stop", "gpt-4o-mini")
    assert done.usage is not None and done.usage["completion_tokens"] == 4
    assert done.latency_ms > 0 and done.ttft_ms is not None
    body = upstream.chat_requests[0].body
    assert (body["temperature"], body["messages"]) == (0.5, HI)


async def test_each_delta_is_yielded_as_soon_as_it_arrives(
    client: LLMAgentClient, upstream: FakeOpenAI
) -> None:
    upstream.script({"chunks": ["one ", "two ", "three"], "chunk_delay": 0.3})
    arrivals = []
    async for item in call(client):
        arrivals.append((item, time.monotonic()))
    first, last = arrivals[0], arrivals[-1]
    assert isinstance(first[0], LLMDelta) and isinstance(last[0], LLMDone)
    assert last[1] - first[1] > 0.4  # the first delta did not wait for the rest


async def test_request_id_and_bearer_token_reach_the_agent(
    start_agent: StartAgent, make_client: MakeClient, upstream: FakeOpenAI
) -> None:
    client = make_client(start_agent(llm_agent_token="s3cret"), token="s3cret")
    items = [item async for item in call(client, request_id="req-42")]
    assert isinstance(items[-1], LLMDone)
    # The agent forwards the request id upstream: it got ours.
    assert upstream.chat_requests[0].headers["x-request-id"] == "req-42"


async def test_a_wrong_token_means_the_agent_is_unavailable(
    start_agent: StartAgent, make_client: MakeClient, upstream: FakeOpenAI
) -> None:
    client = make_client(start_agent(llm_agent_token="s3cret"), token="wrong")
    items, error = await collect(client)
    assert items == [] and error is not None
    assert (error.code, run_error_status(error.code), error.retryable) == (
        "llm_agent_unavailable",
        503,
        False,
    )
    assert upstream.chat_requests == []


@pytest.mark.parametrize(
    ("fault", "overrides", "deltas", "code", "status", "retryable"),
    [
        ({"status": 401}, {}, 0, "llm_upstream_error", 502, False),
        ({"chunks": CHUNKS, "drop_after": 2}, {}, 2, "llm_upstream_error", 502, True),
        ({"chunks": CHUNKS, "malformed_after": 1}, {}, 1, "llm_upstream_error", 502, True),
        (
            {"chunks": CHUNKS, "stall_after": 1, "stall_seconds": 5},
            {"openai_read_timeout": 0.3},
            1,
            "llm_timeout",
            504,
            True,
        ),
        (
            {"chunks": CHUNKS, "stall_after": 0, "stall_seconds": 5},
            {"openai_read_timeout": 0.3, "retry_max_attempts": 1},
            0,
            "llm_timeout",
            504,
            True,
        ),
    ],
    ids=["upstream-401", "drop-after-2", "malformed", "stall-mid-stream", "stall-before-output"],
)
async def test_upstream_faults_map_to_api_codes(
    start_agent: StartAgent,
    make_client: MakeClient,
    upstream: FakeOpenAI,
    fault: dict[str, Any],
    overrides: dict[str, Any],
    deltas: int,
    code: str,
    status: int,
    retryable: bool,
) -> None:
    client = make_client(start_agent(**overrides))
    upstream.script(fault)
    items, error = await collect(client)
    assert [i.text for i in items] == CHUNKS[:deltas]
    assert error is not None
    assert (error.code, run_error_status(error.code), error.retryable) == (code, status, retryable)
    assert error.message


async def test_rate_limit_keeps_retry_after(client: LLMAgentClient, upstream: FakeOpenAI) -> None:
    upstream.script({"status": 429, "headers": {"Retry-After": "120"}})
    items, error = await collect(client)
    assert items == [] and error is not None
    assert (error.code, run_error_status(error.code), error.retryable) == (
        "llm_rate_limited",
        429,
        True,
    )
    assert error.retry_after == 120


async def test_an_unconfigured_provider_means_the_agent_is_unavailable(
    start_agent: StartAgent, make_client: MakeClient
) -> None:
    # No key for OpenAI's own endpoint: the agent refuses before calling anything.
    client = make_client(start_agent(openai_api_key=None, openai_base_url=None))
    _, error = await collect(client)
    assert error is not None and (error.code, run_error_status(error.code)) == (
        "llm_agent_unavailable",
        503,
    )
    health = await client.health()
    assert health["status"] == "failing" and health["http_status"] == 503


async def test_an_agent_that_is_not_listening_is_unavailable(make_client: MakeClient) -> None:
    client = make_client(f"http://127.0.0.1:{free_port()}")
    _, error = await collect(client)
    assert error is not None
    assert (error.code, run_error_status(error.code), error.retryable) == (
        "llm_agent_unavailable",
        503,
        True,
    )
    health = await client.health()
    assert health["status"] == "failing" and "ConnectError" in health["error"]


async def test_a_slow_agent_times_out_at_the_client_timeout(
    start_agent: StartAgent, make_client: MakeClient, upstream: FakeOpenAI
) -> None:
    client = make_client(start_agent(openai_read_timeout=5), timeout=0.3)
    upstream.script({"delay": 1.5})
    started = time.monotonic()
    _, error = await collect(client)
    assert error is not None and (error.code, run_error_status(error.code)) == ("llm_timeout", 504)
    assert time.monotonic() - started < 1.2


async def test_closing_the_iterator_early_leaves_the_client_usable(
    client: LLMAgentClient, upstream: FakeOpenAI
) -> None:
    upstream.script({"chunks": CHUNKS, "stall_after": 1, "stall_seconds": 10})
    items = call(client)
    assert await anext(items) == LLMDelta("alpha ")
    started = time.monotonic()
    await items.aclose()  # type: ignore[attr-defined]
    assert time.monotonic() - started < 1
    after, error = await asyncio.wait_for(collect(client), 5)
    assert error is None and isinstance(after[-1], LLMDone)


async def test_a_full_connection_pool_is_a_clear_error_not_a_generation_timeout(
    start_agent: StartAgent, make_client: MakeClient, upstream: FakeOpenAI
) -> None:
    client = make_client(start_agent(), timeout=30, max_connections=1, pool_timeout=0.2)
    upstream.script({"chunks": CHUNKS, "chunk_delay": 0.3})
    holding = call(client)
    assert await anext(holding) == LLMDelta("alpha ")  # the one connection is in use
    started = time.monotonic()
    items, error = await collect(client)
    assert items == [] and error is not None
    assert (error.code, run_error_status(error.code), error.retryable) == (
        "llm_agent_unavailable",
        503,
        True,
    )
    assert "all 1 (LLM_AGENT_MAX_CONNECTIONS) are busy" in error.message
    assert time.monotonic() - started < 10  # the pool wait, not the 30 s generation timeout
    assert len(upstream.chat_requests) == 1  # the refused call never reached the agent
    # The agent itself is fine, and says so while the pool is full.
    assert (await client.health())["status"] == "ok"
    rest = [item async for item in holding]
    assert isinstance(rest[-1], LLMDone)
    # The connection is back in the pool: the next call gets it.
    after, error = await collect(client)
    assert error is None and isinstance(after[-1], LLMDone)


async def test_health_ok(client: LLMAgentClient) -> None:
    health = await client.health()
    assert (health["status"], health["provider"]) == ("ok", "openai")
    assert health["latency_ms"] >= 0


# ---- wire details the real agent does not produce: a scripted SSE server ----


def scripted(status: int, body: list[bytes], content_type: str = "text/event-stream") -> Starlette:
    async def stream(request: Request) -> Response:
        async def parts() -> AsyncIterator[bytes]:
            for part in body:
                yield part
                await asyncio.sleep(0.01)

        return StreamingResponse(parts(), status_code=status, media_type=content_type)

    return Starlette(routes=[Route("/generate/stream", stream, methods=["POST"])])


DONE = (
    b'event: done\ndata: {"finish_reason": "stop", "usage": null, "model": "m",\n'
    b'data: "latency_ms": 5, "ttft_ms": null}\n\n'
)


@pytest.mark.parametrize(
    ("status", "body", "texts", "code"),
    [
        (
            200,
            [
                b': ping\r\n\r\nid: 1\r\nevent: delta\r\ndata: {"text": "a"}\r\n\r\n',
                b"event: future\ndata: {}\n\n: ping\n\n",
                b'event: delta\ndata: {"text"',
                b': "b"}\n\n',
                DONE,
            ],
            ["a", "b"],
            None,
        ),
        (200, [b'event: delta\ndata: {"text": "a"}\n\n'], ["a"], "llm_upstream_error"),
        (200, [b'event: delta\ndata: {"text": 1}\n\n'], [], "llm_upstream_error"),
        (200, [b"event: done\ndata: not json\n\n"], [], "llm_upstream_error"),
        (
            200,
            [
                b'event: error\ndata: {"code": "upstream_rate_limited", "message": "slow down", '
                b'"retryable": false, "retry_after": 7}\n\n'
            ],
            [],
            "llm_rate_limited",
        ),
        (502, [b"<html>Bad Gateway</html>"], [], "llm_agent_unavailable"),
        (504, [b"<html>Gateway Timeout</html>"], [], "llm_timeout"),
    ],
    ids=[
        "pings-crlf-multiline",
        "no-terminal-event",
        "bad-delta",
        "bad-json",
        "error-event",
        "proxy-502",
        "proxy-504",
    ],
)
async def test_sse_wire_details(
    make_client: MakeClient, status: int, body: list[bytes], texts: list[str], code: str | None
) -> None:
    with serve_in_thread(scripted(status, body)) as url:
        client = make_client(url)
        items, error = await collect(client)
        await client.aclose()
    assert [i.text for i in items if isinstance(i, LLMDelta)] == texts
    if code is None:
        assert error is None and items[-1] == LLMDone("stop", None, "m", 5.0, None)
    else:
        assert error is not None and error.code == code
    if code == "llm_rate_limited":
        assert error is not None and (error.retryable, error.retry_after) == (False, 7)
