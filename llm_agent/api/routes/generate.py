"""Generation routes: whole answers and SSE streams."""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator

from fastapi import APIRouter, Depends
from fastapi.responses import StreamingResponse
from loguru import logger

from llm_agent.api.deps import GeneratorDep, MetricsDep, RequestIdDep, SettingsDep, require_token
from llm_agent.api.schemas import GenerateResponse, UsageOut
from llm_agent.errors import AgentError
from llm_agent.generation import StreamDone
from llm_agent.metrics import Metrics
from llm_agent.params import GenerateRequest, resolve_params
from llm_agent.providers.base import Delta, Usage
from stubichat_common.routing import JSONRoute
from stubichat_common.sse import SSE_HEADERS, sse_event

router = APIRouter(
    prefix="/generate",
    tags=["generate"],
    dependencies=[Depends(require_token)],
    route_class=JSONRoute,
)


def _usage(usage: Usage | None) -> UsageOut | None:
    return None if usage is None else UsageOut(**usage.as_dict())


@router.post("/", response_model=GenerateResponse)
async def generate(
    body: GenerateRequest, settings: SettingsDep, generator: GeneratorDep, request_id: RequestIdDep
) -> GenerateResponse:
    params = resolve_params(body, settings, request_id)
    result = await generator.generate(params)
    return GenerateResponse(
        content=result.content,
        model=result.model,
        finish_reason=result.finish_reason,
        usage=_usage(result.usage),
        latency_ms=result.latency_ms,
        provider=generator.provider.name,
    )


@router.post(
    "/stream",
    response_class=StreamingResponse,
    responses={200: {"content": {"text/event-stream": {}}}},
)
async def generate_stream(
    body: GenerateRequest,
    settings: SettingsDep,
    generator: GeneratorDep,
    metrics: MetricsDep,
    request_id: RequestIdDep,
) -> StreamingResponse:
    """SSE: `delta {text}` events, then `done` or `error`.

    Failures before any output (validation, auth, rate limits, an unreachable
    upstream after its retries) answer as plain JSON errors with their status.
    """
    params = resolve_params(body, settings, request_id)
    items = generator.stream(params)
    first = await anext(items)
    return StreamingResponse(
        _relay(first, items, metrics), media_type="text/event-stream", headers=SSE_HEADERS
    )


async def _relay(
    first: Delta | StreamDone, rest: AsyncGenerator[Delta | StreamDone, None], metrics: Metrics
) -> AsyncIterator[bytes]:
    event_id = 0

    def frame(item: Delta | StreamDone) -> bytes:
        nonlocal event_id
        event_id += 1
        if isinstance(item, Delta):
            return sse_event("delta", {"text": item.text}, event_id)
        return sse_event(
            "done",
            {
                "finish_reason": item.finish_reason,
                "usage": None if item.usage is None else item.usage.as_dict(),
                "model": item.model,
                "latency_ms": item.latency_ms,
                "ttft_ms": item.ttft_ms,
            },
            event_id,
        )

    try:
        yield frame(first)
        async for item in rest:
            yield frame(item)
    except AgentError as error:
        metrics.errors.labels(error.code).inc()
        logger.warning("stream ended with {}: {}", error.code, error.message)
        event_id += 1
        yield sse_event(
            "error",
            {"code": error.code, "message": error.message, "retryable": error.retryable},
            event_id,
        )
    except Exception:
        metrics.errors.labels("internal_error").inc()
        logger.exception("stream failed unexpectedly")
        event_id += 1
        yield sse_event(
            "error",
            {
                "code": "internal_error",
                "message": "an unexpected error ended the stream",
                "retryable": True,
            },
            event_id,
        )
    finally:
        await rest.aclose()
