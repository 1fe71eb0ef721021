"""The offline provider: deterministic answers, streamed word by word, no key needed."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator

from llm_agent.providers.base import (
    Completion,
    Delta,
    Finish,
    GenerationParams,
    ProviderHealth,
    StreamItem,
    Usage,
)
from stubichat_common.tokens import estimate_tokens

_WORD = re.compile(r"\S+\s*")


def echo_answer(params: GenerationParams) -> tuple[list[str], str]:
    """The words of the answer and its finish reason, capped at `max_tokens` words."""
    last_user = next((m["content"] for m in reversed(params.messages) if m["role"] == "user"), "")
    words = _WORD.findall(f"Echo: {last_user.strip()}")
    if len(words) > params.max_tokens:
        return words[: params.max_tokens], "length"
    return words, "stop"


def _usage(params: GenerationParams, completion_tokens: int) -> Usage:
    prompt_tokens = sum(estimate_tokens(m["content"]) for m in params.messages)
    return Usage(prompt_tokens, completion_tokens, prompt_tokens + completion_tokens)


class EchoProvider:
    name = "echo"

    def __init__(self, word_delay: float = 0.0) -> None:
        self._word_delay = word_delay

    async def complete(self, params: GenerationParams) -> Completion:
        words, finish_reason = echo_answer(params)
        return Completion("".join(words), params.model, finish_reason, _usage(params, len(words)))

    async def stream(self, params: GenerationParams) -> AsyncIterator[StreamItem]:
        words, finish_reason = echo_answer(params)
        for word in words:
            if self._word_delay:
                await asyncio.sleep(self._word_delay)
            yield Delta(word)
        yield Finish(finish_reason, params.model, _usage(params, len(words)))

    def health(self) -> ProviderHealth:
        return ProviderHealth(
            usable=True,
            detail={"note": "offline echo provider: answers repeat the last user message"},
        )

    async def aclose(self) -> None:
        return None
