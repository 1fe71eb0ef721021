"""The generation service: a provider call with timing, metrics and logs around it."""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator
from dataclasses import dataclass

from loguru import logger

from llm_agent.errors import AgentError
from llm_agent.metrics import Metrics
from llm_agent.providers.base import Delta, GenerationParams, Provider, Usage


@dataclass(frozen=True, slots=True)
class Generated:
    content: str
    model: str
    finish_reason: str | None
    usage: Usage | None
    latency_ms: float


@dataclass(frozen=True, slots=True)
class StreamDone:
    finish_reason: str
    model: str
    usage: Usage | None
    latency_ms: float
    ttft_ms: float | None


def _ms(seconds: float) -> float:
    return round(seconds * 1000, 1)


class Generator:
    def __init__(self, provider: Provider, metrics: Metrics) -> None:
        self.provider = provider
        self.metrics = metrics

    def _record(self, model: str, outcome: str, elapsed: float, usage: Usage | None) -> None:
        name = self.provider.name
        self.metrics.upstream_duration.labels(name, model, outcome).observe(elapsed)
        if usage is not None:
            self.metrics.tokens.labels(name, model, "prompt").inc(usage.prompt_tokens)
            self.metrics.tokens.labels(name, model, "completion").inc(usage.completion_tokens)

    async def generate(self, params: GenerationParams) -> Generated:
        started = time.perf_counter()
        try:
            completion = await self.provider.complete(params)
        except AgentError as error:
            self._record(params.model, error.code, time.perf_counter() - started, None)
            raise
        elapsed = time.perf_counter() - started
        self._record(params.model, "ok", elapsed, completion.usage)
        logger.info(
            "generated {} chars with {} in {:.0f} ms ({})",
            len(completion.content),
            completion.model,
            elapsed * 1000,
            completion.finish_reason,
        )
        return Generated(
            completion.content,
            completion.model,
            completion.finish_reason,
            completion.usage,
            _ms(elapsed),
        )

    async def stream(self, params: GenerationParams) -> AsyncGenerator[Delta | StreamDone, None]:
        """Deltas, then one `StreamDone`; an `AgentError` ends it otherwise."""
        started = time.perf_counter()
        first_token_at: float | None = None
        self.metrics.active_streams.inc()
        try:
            async for item in self.provider.stream(params):
                if isinstance(item, Delta):
                    if first_token_at is None:
                        first_token_at = time.perf_counter()
                        self.metrics.time_to_first_token.labels(
                            self.provider.name, params.model
                        ).observe(first_token_at - started)
                    yield item
                    continue
                elapsed = time.perf_counter() - started
                self._record(params.model, "ok", elapsed, item.usage)
                ttft = None if first_token_at is None else _ms(first_token_at - started)
                logger.info(
                    "streamed {} in {:.0f} ms (ttft {} ms, {})",
                    item.model,
                    elapsed * 1000,
                    ttft,
                    item.finish_reason,
                )
                yield StreamDone(item.finish_reason, item.model, item.usage, _ms(elapsed), ttft)
        except AgentError as error:
            self._record(params.model, error.code, time.perf_counter() - started, None)
            raise
        finally:
            self.metrics.active_streams.dec()
