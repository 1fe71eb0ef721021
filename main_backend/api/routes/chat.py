"""Chat routes: a turn answered whole (`/chat/`) or streamed as SSE (`/chat/stream`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Body, Header, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse

from main_backend.api.deps import (
    ChatDep,
    MetricsDep,
    RequestIdDep,
    SettingsDep,
    ShutdownDep,
    UserDep,
)
from main_backend.api.errors import (
    database_unavailable_response,
    error_responses,
    run_error_status,
)
from main_backend.api.routes.runs import stream_location
from main_backend.api.schemas import ChatRequest, ChatResponse, Message, Usage
from main_backend.api.streaming import sse_body
from main_backend.conversation.chat import Repeat
from main_backend.conversation.graph import RunDelta, RunEnded, RunStarted
from main_backend.conversation.idempotency import request_hash
from main_backend.conversation.runner import RunEvent, RunHandle
from main_backend.conversation.streams import with_ids
from main_backend.conversation.turns import ChatCommand, ChatMessage
from main_backend.db import is_database_unavailable
from main_backend.errors import InvalidRequest
from main_backend.llm_client import LLM_CODES
from main_backend.metrics import Metrics
from main_backend.settings import Settings
from main_backend.shutdown import Shutdown
from stubichat_common.errors import error_response
from stubichat_common.limits import message_problems
from stubichat_common.routing import JSONRoute
from stubichat_common.sse import SSE_HEADERS

router = APIRouter(tags=["chat"], route_class=JSONRoute)

# Every field is optional, so an empty body is `{}` (and says which field is missing).
ChatBody = Annotated[ChatRequest, Body(default_factory=ChatRequest)]
IdempotencyKey = Annotated[
    str | None,
    Header(alias="Idempotency-Key", min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$"),
]

_ERRORS = error_responses(
    "thread_not_found",
    "thread_busy",
    "version_conflict",
    "request_in_progress",
    "payload_too_large",
    "invalid_request",
    "idempotency_key_reused",
    *LLM_CODES,
    "too_many_active_runs",
    "database_unavailable",
    "shutting_down",
)
_SSE: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {}}}}


def to_command(
    body: ChatRequest, user: str, settings: Settings, request_id: str | None
) -> ChatCommand:
    """The domain command, with the limits and defaults that come from settings."""
    model = body.model or settings.default_model
    contents = [m.content for m in body.messages]
    problems = [
        *settings.parameter_problems(model, body.max_tokens),
        *message_problems(contents, settings.max_input_messages, settings.max_message_chars),
    ]
    if problems:  # this API has always named the first problem only
        field, problem = problems[0]
        raise InvalidRequest(problem, field)
    return ChatCommand(
        user=user,
        messages=[ChatMessage(m.role, m.content) for m in body.messages],
        model=model,
        temperature=settings.temperature if body.temperature is None else body.temperature,
        max_tokens=body.max_tokens,
        thread_id=body.thread_id,
        system_prompt=body.system_prompt,
        metadata=body.metadata,
        expected_version=body.expected_version,
        request_id=request_id,
    )


async def _start(
    body: ChatRequest,
    user: str,
    chat: ChatDep,
    settings: Settings,
    request_id: str | None,
    key: str | None,
) -> RunHandle | Repeat:
    command = to_command(body, user, settings, request_id)
    digest = request_hash(body.model_dump(mode="json", exclude={"stream"}))
    return await chat.start(command, key, digest)


@router.post("/chat/", response_model=ChatResponse, responses={**_SSE, **_ERRORS})
async def chat_turn(
    request: Request,
    response: Response,
    body: ChatBody,
    user: UserDep,
    chat: ChatDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    shutdown: ShutdownDep,
    request_id: RequestIdDep,
    idempotency_key: IdempotencyKey = None,
) -> ChatResponse | JSONResponse | StreamingResponse:
    """Answer the thread's newest user message (`"stream": true` streams it)."""
    shutdown.refuse_new_runs()
    started = await _start(body, user, chat, settings, request_id, idempotency_key)
    if body.stream:
        return _sse_response(started, settings, metrics, shutdown)
    if isinstance(started, Repeat):
        ended: RunEnded | None = started.ended
    else:
        # At the shutdown's deadline the run is handed over: its answer comes later.
        ended = await shutdown.unless_streams_end(started.wait_ended())
        if ended is None and shutdown.draining:
            raise shutdown.handed_over(started.thread_id, started.run_id)
    if ended is None:
        error = started.error if isinstance(started, RunHandle) else None
        if error is not None and is_database_unavailable(error):
            return database_unavailable_response(request, error)
        return error_response(
            request, 500, "internal_error", "the answer could not be recorded; it will be retried"
        )
    if ended.status == "failed":
        return _failed_response(request, ended)
    response.headers["Location"] = stream_location(ended.thread_id, ended.run_id)
    return _chat_response(ended)


@router.post("/chat/stream", response_class=StreamingResponse, responses={**_SSE, **_ERRORS})
async def chat_stream(
    body: ChatBody,
    user: UserDep,
    chat: ChatDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    shutdown: ShutdownDep,
    request_id: RequestIdDep,
    idempotency_key: IdempotencyKey = None,
) -> StreamingResponse:
    """SSE: `run.started`, `delta`s, then one of `run.completed`, `run.failed`, `run.cancelled`
    (none when this replica shuts down meanwhile: resume at `Location`)."""
    shutdown.refuse_new_runs()
    started = await _start(body, user, chat, settings, request_id, idempotency_key)
    return _sse_response(started, settings, metrics, shutdown)


def _chat_response(ended: RunEnded) -> ChatResponse:
    assert ended.message is not None
    return ChatResponse(
        thread_id=ended.thread_id,
        run_id=ended.run_id,
        message=Message.of(ended.message),
        usage=Usage(**ended.usage) if ended.usage else None,
        finish_reason=ended.finish_reason if ended.status == "completed" else "cancelled",
        model=ended.model,
        version=ended.version,
    )


def _failed_response(request: Request, ended: RunEnded) -> JSONResponse:
    error = ended.error or {}
    code = error.get("code", "internal_error")
    status = run_error_status(code)
    retry_after = error.get("retry_after")
    headers = {"Retry-After": str(round(retry_after))} if retry_after else None
    details = [
        {
            "thread_id": ended.thread_id,
            "run_id": ended.run_id,
            "partial_content": ended.partial_content,
        }
    ]
    return error_response(
        request, status, code, error.get("message", "the run failed"), details, headers
    )


def _sse_response(
    started: RunHandle | Repeat, settings: Settings, metrics: Metrics, shutdown: Shutdown
) -> StreamingResponse:
    thread_id, run_id = (
        (started.ended.thread_id, started.ended.run_id)
        if isinstance(started, Repeat)
        else (started.thread_id, started.run_id)
    )
    return StreamingResponse(
        _sse(started, settings.sse_ping_seconds, metrics, shutdown),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, "Location": stream_location(thread_id, run_id)},
    )


async def _replayed(repeat: Repeat) -> AsyncIterator[RunEvent]:
    ended = repeat.ended
    yield RunStarted(ended.thread_id, ended.run_id, ended.version, [])
    if ended.message is not None and ended.message.content:
        yield RunDelta(ended.message.content)
    yield ended


def _sse(
    started: RunHandle | Repeat, ping_seconds: float, metrics: Metrics, shutdown: Shutdown
) -> AsyncIterator[bytes]:
    if isinstance(started, Repeat):
        events = with_ids(_replayed(started), started.attempt)
        return sse_body(events, ping_seconds, metrics, shutdown)
    return sse_body(
        with_ids(started.follow(), started.attempt),
        ping_seconds,
        metrics,
        shutdown,
        partial(_unrecorded_error, started),
    )


def _unrecorded_error(started: RunHandle | Repeat) -> dict[str, Any]:
    """Why a run's stream ends without its end: the database, or anything else."""
    if isinstance(started, RunHandle) and is_database_unavailable(started.error):
        return {
            "code": "database_unavailable",
            "retryable": True,
            "message": "the database stopped answering; this answer will be completed "
            "when it is back",
        }
    return {
        "code": "internal_error",
        "retryable": True,
        "message": "the answer could not be recorded; it will be retried",
    }
