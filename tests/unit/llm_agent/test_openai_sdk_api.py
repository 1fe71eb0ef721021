"""The OpenAI SDK's private API that `llm_agent/providers/openai.py` leans on is still there.

The provider posts its own body through `AsyncOpenAI.post(..., stream_cls=...)` and
learns whether `[DONE]` came by overriding `AsyncStream._iter_events`. Neither is
public, so a new SDK release may move them without notice; pyproject.toml holds
`openai` to one major version, and these tests say by name what moved, instead of
the provider failing every stream with a puzzling "no [DONE] terminator".
"""

from __future__ import annotations

import inspect

import openai
from openai import AsyncOpenAI, AsyncStream
from openai.types.chat import ChatCompletion

from llm_agent.providers.openai import _ChunkStream
from tests.fakes.openai_server import FakeOpenAI

MOVED = (
    f"openai {openai.__version__} moved private API that llm_agent/providers/openai.py uses: "
    "adapt the provider (see its docstring) or keep openai below this version in pyproject.toml"
)


def test_async_openai_post_still_takes_a_body_options_and_a_stream_class() -> None:
    parameters = inspect.signature(AsyncOpenAI.post).parameters
    missing = {"cast_to", "body", "options", "stream", "stream_cls"} - parameters.keys()
    assert not missing, f"{MOVED}: AsyncOpenAI.post no longer takes {sorted(missing)}"


def test_async_stream_still_reads_its_events_through_iter_events() -> None:
    iter_events = getattr(AsyncStream, "_iter_events", None)
    assert iter_events is not None, f"{MOVED}: AsyncStream._iter_events is gone"
    assert inspect.isasyncgenfunction(iter_events), (
        f"{MOVED}: AsyncStream._iter_events is no longer an async generator"
    )
    assert list(inspect.signature(iter_events).parameters) == ["self"], (
        f"{MOVED}: AsyncStream._iter_events takes arguments now"
    )
    assert "self._iter_events()" in inspect.getsource(AsyncStream.__stream__), (
        f"{MOVED}: AsyncStream.__stream__ no longer reads events through _iter_events"
    )


def test_stream_events_still_carry_their_data() -> None:
    from openai._streaming import ServerSentEvent

    data = getattr(ServerSentEvent, "data", None)
    assert isinstance(data, property), f"{MOVED}: ServerSentEvent.data is no longer a property"


async def test_the_chunk_stream_sees_the_done_terminator_through_the_sdk() -> None:
    with FakeOpenAI() as fake:
        client = AsyncOpenAI(api_key="sk-test", base_url=fake.url, max_retries=0)
        try:
            stream = await client.post(
                "/chat/completions",
                cast_to=ChatCompletion,
                body={
                    "model": "gpt-4o-mini",
                    "messages": [{"role": "user", "content": "hi"}],
                    "stream": True,
                },
                stream=True,
                stream_cls=_ChunkStream,
            )
            assert isinstance(stream, _ChunkStream), f"{MOVED}: post() ignored stream_cls"
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        finally:
            await client.close()
    assert text == "You said: hi"
    assert stream.saw_done, f"{MOVED}: the [DONE] event no longer passes through _iter_events"
