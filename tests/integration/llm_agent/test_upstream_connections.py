"""OPENAI_MAX_CONNECTIONS bounds the agent's connections to the upstream: a stream holds
one for its whole length, and a generation past the bound waits for a free one."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

from tests.fakes.openai_server import FakeOpenAI
from tests.integration.llm_agent.conftest import USER_HI, StartAgent
from tests.support.sse import parse_sse

CHUNKS = ["alpha ", "beta ", "gamma ", "delta"]


def test_streams_past_the_bound_wait_for_a_connection(
    start_agent: StartAgent, upstream: FakeOpenAI
) -> None:
    # A connect timeout long enough for the first stream to end on a slow machine: the
    # pool waits for a connection that long.
    agent = start_agent(openai_max_connections=1, openai_connect_timeout=30.0)
    upstream.script(*[{"chunks": CHUNKS, "chunk_delay": 0.1}] * 3)

    def stream(_: int) -> str:
        response = agent.post("/generate/stream", json=USER_HI)
        assert response.status_code == 200, response.text
        events = parse_sse(response.text)
        assert [e.event for e in events] == ["delta"] * len(CHUNKS) + ["done"]
        return "".join(e.data["text"] for e in events[:-1])

    with ThreadPoolExecutor(3) as pool:
        answers = list(pool.map(stream, range(3)))

    assert answers == ["".join(CHUNKS)] * 3
    # One after another over the one connection the bound allows.
    assert upstream.connection_count == 1
    assert len(upstream.chat_requests) == 3
