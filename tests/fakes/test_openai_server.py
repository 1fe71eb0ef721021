"""Tests of the fake OpenAI server, driven through the real ``openai.AsyncOpenAI`` SDK."""

from __future__ import annotations

import asyncio
import json
import select
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.fakes.openai_server import Behaviour, FakeOpenAI, RecordedRequest, split_pieces

ROOT = Path(__file__).resolve().parents[2]
MESSAGES: list[Any] = [
    {"role": "system", "content": "be nice"},
    {"role": "user", "content": "hello there friend"},
]
ECHO = "You said: hello there friend"


@pytest.fixture
def fake() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as server:
        yield server


def sdk(fake: FakeOpenAI, timeout: float | openai.Timeout = 5.0) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(api_key="test-key", base_url=fake.url, max_retries=0, timeout=timeout)


async def collect(stream: Any, deltas: list[str], finish: list[str | None]) -> list[Any]:
    """Drain a chat stream, appending content deltas / finish reasons as they arrive."""
    chunks = []
    async for chunk in stream:
        chunks.append(chunk)
        for choice in chunk.choices:
            if choice.delta.content:
                deltas.append(choice.delta.content)
            if choice.finish_reason:
                finish.append(choice.finish_reason)
    return chunks


async def stream_with(
    fake: FakeOpenAI, behaviour: Behaviour, client_timeout: float | openai.Timeout = 5.0
) -> tuple[list[str], list[str | None], Exception | None]:
    """Run one streaming request; return (deltas, finish_reasons, exception or None)."""
    fake.script(behaviour)
    deltas: list[str] = []
    finish: list[str | None] = []
    async with sdk(fake, client_timeout) as client:
        try:
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=MESSAGES, stream=True
            )
            await collect(stream, deltas, finish)
        except Exception as exc:
            return deltas, finish, exc
    return deltas, finish, None


def test_split_pieces_round_trips() -> None:
    for text in ["", "one", "  lead and  trail  ", "a\nb\tc", ECHO]:
        assert "".join(split_pieces(text)) == text
    assert split_pieces("You said: hi") == ["You ", "said: ", "hi"]


def test_behaviour_from_dict_and_unknown_field(fake: FakeOpenAI) -> None:
    spec: dict[str, Any] = {"status": 429, "headers": {"Retry-After": "1"}}
    assert Behaviour(**spec).status == 429
    with pytest.raises(TypeError):
        fake.script({"no_such_field": 1})


@pytest.mark.asyncio
async def test_non_stream_reply_and_usage(fake: FakeOpenAI) -> None:
    async with sdk(fake) as client:
        reply = await client.chat.completions.create(model="gpt-4o", messages=MESSAGES)
    assert reply.object == "chat.completion"
    assert reply.model == "gpt-4o"
    assert reply.choices[0].message.role == "assistant"
    assert reply.choices[0].message.content == ECHO
    assert reply.choices[0].finish_reason == "stop"
    assert reply.usage is not None
    prompt = (len("be nice") + len("hello there friend")) // 4 + 1
    assert reply.usage.prompt_tokens == prompt
    assert reply.usage.completion_tokens == len(split_pieces(ECHO))
    assert reply.usage.total_tokens == prompt + len(split_pieces(ECHO))


@pytest.mark.asyncio
async def test_non_stream_scripted_content_and_default_without_user(fake: FakeOpenAI) -> None:
    fake.script(Behaviour(content="Scripted!", finish_reason="length", usage={"x": 1}))
    async with sdk(fake) as client:
        first = await client.chat.completions.create(model="m", messages=MESSAGES)
        second = await client.chat.completions.create(
            model="m", messages=[{"role": "system", "content": "s"}]
        )
    assert first.choices[0].message.content == "Scripted!"
    assert first.choices[0].finish_reason == "length"
    assert second.choices[0].message.content == "Hello from the fake upstream."


@pytest.mark.asyncio
async def test_stream_pieces_finish_and_no_usage(fake: FakeOpenAI) -> None:
    async with sdk(fake) as client:
        stream = await client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True
        )
        deltas: list[str] = []
        finish: list[str | None] = []
        chunks = await collect(stream, deltas, finish)
    assert chunks[0].object == "chat.completion.chunk"
    assert chunks[0].model == "gpt-4o-mini"
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(deltas) == ECHO
    assert deltas == split_pieces(ECHO)
    assert finish == ["stop"]
    assert chunks[-1].choices[0].finish_reason == "stop"
    assert all(c.usage is None for c in chunks)


@pytest.mark.asyncio
async def test_stream_usage_only_with_include_usage(fake: FakeOpenAI) -> None:
    fake.script(Behaviour(chunks=["a", "b", "c"], chunk_delay=0.01))
    async with sdk(fake) as client:
        stream = await client.chat.completions.create(
            model="m", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
        deltas: list[str] = []
        chunks = await collect(stream, deltas, [])
    assert deltas == ["a", "b", "c"]
    last = chunks[-1]
    assert last.choices == []
    assert last.usage is not None
    assert last.usage.completion_tokens == 3
    assert all(c.usage is None for c in chunks[:-1])


@pytest.mark.asyncio
async def test_stream_finish_reason_none(fake: FakeOpenAI) -> None:
    deltas, finish, exc = await stream_with(fake, Behaviour(content="x y", finish_reason=None))
    assert exc is None
    assert deltas == ["x ", "y"]
    assert finish == []


@pytest.mark.asyncio
async def test_rate_limit_with_retry_after(fake: FakeOpenAI) -> None:
    fake.script(Behaviour(status=429, headers={"Retry-After": "2"}, error_message="slow down"))
    async with sdk(fake) as client:
        with pytest.raises(openai.RateLimitError) as info:
            await client.chat.completions.create(model="m", messages=MESSAGES)
    err = info.value
    assert err.status_code == 429
    assert err.response.headers["retry-after"] == "2"
    assert err.code == "rate_limit_exceeded"
    assert isinstance(err.body, dict)
    assert err.body["message"] == "slow down"


@pytest.mark.asyncio
@pytest.mark.parametrize(
    ("status", "exc_type"),
    [
        (400, openai.BadRequestError),
        (401, openai.AuthenticationError),
        (403, openai.PermissionDeniedError),
        (404, openai.NotFoundError),
        (500, openai.InternalServerError),
        (503, openai.InternalServerError),
    ],
)
async def test_status_error_mapping(
    fake: FakeOpenAI, status: int, exc_type: type[openai.APIStatusError]
) -> None:
    fake.script(Behaviour(status=status))
    async with sdk(fake) as client:
        with pytest.raises(exc_type) as info:
            await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
    assert info.value.status_code == status


@pytest.mark.asyncio
async def test_delay_beyond_timeout_is_api_timeout(fake: FakeOpenAI) -> None:
    fake.script(Behaviour(delay=2.0))
    async with sdk(fake, timeout=0.3) as client:
        started = time.monotonic()
        with pytest.raises(openai.APITimeoutError):
            await client.chat.completions.create(model="m", messages=MESSAGES)
    assert time.monotonic() - started < 1.5
    assert len(fake.chat_requests) == 1  # recorded before the delay


@pytest.mark.asyncio
async def test_drop_after_stream_is_connection_error(fake: FakeOpenAI) -> None:
    deltas, finish, exc = await stream_with(fake, Behaviour(drop_after=2))
    assert type(exc) is openai.APIConnectionError
    assert deltas == split_pieces(ECHO)[:2]
    assert finish == []


@pytest.mark.asyncio
async def test_drop_after_non_stream_sends_nothing(fake: FakeOpenAI) -> None:
    fake.script(Behaviour(drop_after=0))
    async with sdk(fake) as client:
        with pytest.raises(openai.APIConnectionError) as info:
            await client.chat.completions.create(model="m", messages=MESSAGES)
    assert not isinstance(info.value, openai.APITimeoutError)


@pytest.mark.asyncio
async def test_stall_after_hits_read_timeout(fake: FakeOpenAI) -> None:
    started = time.monotonic()
    deltas, _, exc = await stream_with(
        fake, Behaviour(stall_after=1, stall_seconds=5), client_timeout=openai.Timeout(5, read=0.5)
    )
    assert isinstance(exc, openai.APITimeoutError)
    assert deltas == ["You "]
    assert time.monotonic() - started < 3


@pytest.mark.asyncio
async def test_malformed_after_raises_json_error(fake: FakeOpenAI) -> None:
    deltas, _, exc = await stream_with(fake, Behaviour(malformed_after=1))
    assert isinstance(exc, json.JSONDecodeError)
    assert deltas == ["You "]


@pytest.mark.asyncio
async def test_omit_done_ends_normally(fake: FakeOpenAI) -> None:
    deltas, finish, exc = await stream_with(fake, Behaviour(omit_done=True))
    assert exc is None
    assert "".join(deltas) == ECHO
    assert finish == ["stop"]


@pytest.mark.asyncio
async def test_truncate_after_is_connection_error(fake: FakeOpenAI) -> None:
    deltas, finish, exc = await stream_with(fake, Behaviour(truncate_after=3))
    assert type(exc) is openai.APIConnectionError
    assert deltas == split_pieces(ECHO)[:3]
    assert finish == []


@pytest.mark.asyncio
async def test_fault_after_all_content_still_fires(fake: FakeOpenAI) -> None:
    deltas, finish, exc = await stream_with(fake, Behaviour(chunks=["a", "b"], truncate_after=9))
    assert type(exc) is openai.APIConnectionError
    assert deltas == ["a", "b"]
    assert finish == []  # the truncated event was the finish chunk


@pytest.mark.asyncio
async def test_requests_are_recorded(fake: FakeOpenAI) -> None:
    async with sdk(fake) as client:
        await client.chat.completions.create(model="gpt-4o", messages=MESSAGES, temperature=0)
        models = await client.models.list()
    assert "gpt-4o-mini" in [m.id for m in models.data]
    assert [(r.method, r.path) for r in fake.requests] == [
        ("POST", "/v1/chat/completions"),
        ("GET", "/v1/models"),
    ]
    [chat] = fake.chat_requests
    assert isinstance(chat, RecordedRequest)
    assert chat.headers["authorization"] == "Bearer test-key"
    assert chat.body["model"] == "gpt-4o"
    assert chat.body["messages"] == MESSAGES
    assert chat.body["temperature"] == 0
    assert json.loads(chat.raw) == chat.body
    fake.reset()
    assert fake.requests == []


@pytest.mark.asyncio
async def test_keep_alive_reuses_one_connection(fake: FakeOpenAI) -> None:
    async with sdk(fake) as client:
        first = await client.chat.completions.create(model="m", messages=MESSAGES)
        stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
        deltas: list[str] = []
        await collect(stream, deltas, [])
        third = await client.chat.completions.create(model="m", messages=MESSAGES)
    assert first.choices[0].message.content == third.choices[0].message.content == ECHO
    assert "".join(deltas) == ECHO
    assert len(fake.chat_requests) == 3
    assert fake.connection_count == 1


def test_connection_close_header(fake: FakeOpenAI) -> None:
    with httpx.Client(base_url=fake.url, timeout=5) as client:
        for _ in range(2):
            resp = client.get("/models", headers={"Connection": "close"})
            assert resp.status_code == 200
            assert resp.headers["connection"] == "close"
    assert fake.connection_count == 2


@pytest.mark.asyncio
async def test_chunked_request_body(fake: FakeOpenAI) -> None:
    payload = json.dumps({"model": "m", "messages": MESSAGES}).encode()

    async def body() -> AsyncIterator[bytes]:
        for i in range(0, len(payload), 7):
            yield payload[i : i + 7]

    async with httpx.AsyncClient(base_url=fake.url, timeout=5) as client:
        resp = await client.post("/chat/completions", content=body())
    assert resp.status_code == 200
    assert resp.json()["choices"][0]["message"]["content"] == ECHO
    assert fake.chat_requests[0].headers["transfer-encoding"] == "chunked"
    assert fake.chat_requests[0].raw == payload


@pytest.mark.asyncio
async def test_control_endpoints(fake: FakeOpenAI) -> None:
    async with httpx.AsyncClient(base_url=fake.url.removesuffix("/v1"), timeout=5) as http:
        resp = await http.post(
            "/_fake/script",
            json={"behaviours": [{"status": 401}, {"content": "remote", "chunks": None}]},
        )
        assert resp.json() == {"queued": 2}
        bad = await http.post("/_fake/script", json={"behaviours": [{"bogus": 1}]})
        assert bad.status_code == 400
        async with sdk(fake) as client:
            with pytest.raises(openai.AuthenticationError):
                await client.chat.completions.create(model="m", messages=MESSAGES)
            reply = await client.chat.completions.create(model="m", messages=MESSAGES)
        assert reply.choices[0].message.content == "remote"
        missing = await http.get("/v1/nope")
        assert missing.status_code == 404
        assert missing.json()["error"]["type"] == "invalid_request_error"

        recorded = (await http.get("/_fake/requests")).json()["requests"]
        assert [r["path"] for r in recorded] == ["/v1/chat/completions"] * 2 + ["/v1/nope"]
        assert recorded[0]["body"]["model"] == "m"
        assert recorded[0]["headers"]["authorization"] == "Bearer test-key"

        assert (await http.post("/_fake/reset")).status_code == 200
        assert (await http.get("/_fake/requests")).json() == {"requests": []}
        await http.post("/_fake/script", json={"behaviours": [{"status": 500}]})
        await http.post("/_fake/reset")
    async with sdk(fake) as client:  # the reset also cleared the queue
        reply = await client.chat.completions.create(model="m", messages=MESSAGES)
    assert reply.choices[0].message.content == ECHO


@pytest.mark.asyncio
async def test_stop_does_not_hang_on_stalled_stream() -> None:
    fake = FakeOpenAI().start()
    try:
        fake.script(Behaviour(stall_after=1, stall_seconds=30))
        async with sdk(fake) as client:
            stream = await client.chat.completions.create(model="m", messages=MESSAGES, stream=True)
            iterator = stream.__aiter__()
            await iterator.__anext__()  # role chunk
            await iterator.__anext__()  # first content chunk, then the stall
            started = time.monotonic()
            await asyncio.to_thread(fake.stop)
            assert time.monotonic() - started < 2
            with pytest.raises(openai.APIConnectionError):
                await iterator.__anext__()
            await stream.close()
    finally:
        fake.stop()


def test_subprocess_mode() -> None:
    with subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.openai_server", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    ) as proc:
        try:
            assert proc.stdout is not None
            ready, _, _ = select.select([proc.stdout], [], [], 10)
            assert ready, "server did not print its URL"
            line = proc.stdout.readline()
            assert line.startswith("FAKE_OPENAI_URL=http://127.0.0.1:")
            url = line.strip().split("=", 1)[1]
            assert url.endswith("/v1")
            resp = httpx.post(
                f"{url}/chat/completions", json={"model": "m", "messages": MESSAGES}, timeout=5
            )
            assert resp.json()["choices"][0]["message"]["content"] == ECHO
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=5) == 0
            assert proc.stdout.read() == ""  # exactly one line was printed
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
