"""Generation through the real OpenAI SDK against the wire-level fake upstream."""

from __future__ import annotations

import httpx

from tests.fakes.openai_server import FakeOpenAI
from tests.integration.llm_agent.conftest import USER_HI, StartAgent
from tests.support.sse import parse_sse


def test_generate_returns_the_upstream_answer(agent: httpx.Client, upstream: FakeOpenAI) -> None:
    upstream.script(
        {
            "content": "Hello! I am fine.",
            "usage": {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16},
        }
    )
    response = agent.post(
        "/generate/",
        json={
            **USER_HI,
            "model": "gpt-4o",
            "temperature": 0.2,
            "max_tokens": 50,
            "top_p": 0.9,
            "stop": ["END"],
            "user": "u-1",
        },
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["content"] == "Hello! I am fine."
    assert body["finish_reason"] == "stop"
    assert body["usage"] == {"prompt_tokens": 11, "completion_tokens": 5, "total_tokens": 16}
    assert (body["model"], body["provider"]) == ("gpt-4o", "openai")
    assert body["latency_ms"] >= 0

    [sent] = upstream.chat_requests
    assert sent.headers["authorization"] == "Bearer sk-test"
    assert sent.body == {
        "model": "gpt-4o",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.2,
        "max_tokens": 50,
        "stream": False,
        "top_p": 0.9,
        "stop": ["END"],
        "user": "u-1",
    }


def test_defaults_are_sent_when_the_request_gives_none(
    agent: httpx.Client, upstream: FakeOpenAI
) -> None:
    assert agent.post("/generate/", json=USER_HI).status_code == 200
    [sent] = upstream.chat_requests
    assert (sent.body["model"], sent.body["temperature"], sent.body["max_tokens"]) == (
        "gpt-4o-mini",
        0.7,
        4096,
    )


def test_long_prompts_reach_the_upstream_exactly(agent: httpx.Client, upstream: FakeOpenAI) -> None:
    messages = [{"role": "system", "content": "You are terse."}] + [
        {"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} \u00e9\u4e2d"}
        for i in range(399)
    ]
    response = agent.post("/generate/", json={"messages": messages})
    assert response.status_code == 200
    assert upstream.chat_requests[0].body["messages"] == messages


def test_request_id_is_forwarded_to_the_upstream(agent: httpx.Client, upstream: FakeOpenAI) -> None:
    response = agent.post("/generate/", json=USER_HI, headers={"X-Request-ID": "req-42"})
    assert response.headers["x-request-id"] == "req-42"
    assert upstream.chat_requests[0].headers["x-request-id"] == "req-42"


def test_stream_relays_deltas_then_done(agent: httpx.Client, upstream: FakeOpenAI) -> None:
    upstream.script(
        {
            "chunks": ["Hel", "lo", ", wor", "ld"],
            "usage": {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7},
        }
    )
    response = agent.post("/generate/stream", json=USER_HI)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/event-stream")
    events = parse_sse(response.text)
    assert [e.event for e in events] == ["delta"] * 4 + ["done"]
    assert [e.data["text"] for e in events[:-1]] == ["Hel", "lo", ", wor", "ld"]
    assert [int(e.id) for e in events if e.id] == [1, 2, 3, 4, 5]
    done = events[-1].data
    assert done["finish_reason"] == "stop"
    assert done["usage"] == {"prompt_tokens": 3, "completion_tokens": 4, "total_tokens": 7}
    assert done["model"] == "gpt-4o-mini"
    assert done["ttft_ms"] is not None and done["latency_ms"] >= done["ttft_ms"]
    # usage is asked for so token counts are known for streams too
    assert upstream.chat_requests[0].body["stream_options"] == {"include_usage": True}
    assert upstream.chat_requests[0].body["stream"] is True


def test_stream_deltas_arrive_before_the_upstream_finishes(
    agent: httpx.Client, upstream: FakeOpenAI
) -> None:
    upstream.script({"chunks": ["one ", "two ", "three"], "chunk_delay": 0.4})
    with agent.stream("POST", "/generate/stream", json=USER_HI) as response:
        lines = response.iter_lines()
        first_data = next(line for line in lines if line.startswith("data:"))
        # The first delta is readable while the upstream is still sending.
        assert '"one "' in first_data
        assert len(upstream.chat_requests) == 1
        rest = "\n".join(lines)
    assert '"three"' in rest and "event: done" in rest


def test_the_organization_header_is_sent_when_configured(
    start_agent: StartAgent, upstream: FakeOpenAI
) -> None:
    agent = start_agent(openai_organization="org-stubichat")
    assert agent.post("/generate/", json=USER_HI).status_code == 200
    assert upstream.chat_requests[0].headers["openai-organization"] == "org-stubichat"
