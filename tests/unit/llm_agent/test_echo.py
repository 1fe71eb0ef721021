"""The offline echo provider."""

from __future__ import annotations

from llm_agent.providers.base import Delta, Finish, GenerationParams
from llm_agent.providers.echo import EchoProvider
from stubichat_common.tokens import estimate_tokens


def params(content: str = "Hello there, friend", max_tokens: int = 100) -> GenerationParams:
    return GenerationParams(
        messages=[
            {"role": "system", "content": "be nice"},
            {"role": "user", "content": "first"},
            {"role": "assistant", "content": "Echo: first"},
            {"role": "user", "content": content},
        ],
        model="gpt-4o-mini",
        temperature=0.7,
        max_tokens=max_tokens,
    )


async def test_answer_echoes_the_last_user_message_deterministically() -> None:
    provider = EchoProvider()
    first = await provider.complete(params())
    second = await provider.complete(params())
    assert first == second
    assert first.content == "Echo: Hello there, friend"
    assert first.finish_reason == "stop"
    assert first.usage is not None and first.usage.completion_tokens == 4


async def test_stream_is_word_by_word_and_joins_to_the_answer() -> None:
    provider = EchoProvider()
    items = [item async for item in provider.stream(params())]
    deltas = [i.text for i in items if isinstance(i, Delta)]
    assert deltas == ["Echo: ", "Hello ", "there, ", "friend"]
    assert isinstance(items[-1], Finish) and items[-1].finish_reason == "stop"
    assert "".join(deltas) == (await provider.complete(params())).content


async def test_max_tokens_cuts_the_answer_with_finish_reason_length() -> None:
    completion = await EchoProvider().complete(params(max_tokens=2))
    assert (completion.content, completion.finish_reason) == ("Echo: Hello ", "length")


async def test_usage_counts_the_prompt_as_the_backend_budgets_it() -> None:
    completion = await EchoProvider().complete(params())
    # Four messages: their text, plus the framing every message costs.
    prompt_tokens = sum(estimate_tokens(m) for m in ("be nice", "first", "Echo: first"))
    prompt_tokens += estimate_tokens("Hello there, friend")
    assert prompt_tokens == (2 + 4) + (2 + 4) + (3 + 4) + (5 + 4)
    assert completion.usage is not None
    assert completion.usage.prompt_tokens == prompt_tokens
    assert completion.usage.total_tokens == prompt_tokens + completion.usage.completion_tokens
    streamed = [item async for item in EchoProvider().stream(params())]
    assert isinstance(streamed[-1], Finish) and streamed[-1].usage == completion.usage
