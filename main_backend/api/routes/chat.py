"""Chat routes: a turn answered whole (`/chat/`) or streamed as SSE (`/chat/stream`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
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
    StreamsDep,
    UserDep,
)
from main_backend.api.errors import (
    database_unavailable_response,
    error_responses,
    run_error_status,
)
from main_backend.api.routes.runs import stream_location
from main_backend.api.schemas import ChatRequest, ChatResponse, Message, RunAccepted, Usage
from main_backend.api.streaming import sse_body
from main_backend.conversation.chat import Accepted, ChatService, Repeat
from main_backend.conversation.graph import RunDelta, RunEnded, RunStarted
from main_backend.conversation.idempotency import request_hash
from main_backend.conversation.runner import RunEvent, RunHandle
from main_backend.conversation.streams import RunStreams, Sent, with_ids
from main_backend.conversation.turns import ChatCommand, ChatMessage
from main_backend.db import is_database_unavailable
from main_backend.errors import InvalidRequest, RunCancelledBeforeStart
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
    "queue_full",
    "run_cancelled",
    "database_unavailable",
    "shutting_down",
)
_SSE: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {}}}}
_BACKGROUND: dict[int | str, dict[str, Any]] = {
    202: {"model": RunAccepted, "description": "background: the run is accepted"}
}


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
        if_busy=body.if_busy,
    )


Started = RunHandle | Repeat | Accepted


async def _start(
    body: ChatRequest,
    user: str,
    chat: ChatDep,
    settings: Settings,
    request_id: str | None,
    key: str | None,
    streamed: bool,
) -> Started:
    if body.background and streamed:
        raise InvalidRequest(
            "a background run answers 202 at once: join its stream at the Location it "
            "gives instead of asking for a stream",
            "background",
        )
    command = to_command(body, user, settings, request_id)
    digest = request_hash(body.model_dump(mode="json", exclude={"stream", "on_disconnect"}))
    return await chat.start(command, key, digest, background=body.background)


@router.post("/chat/", response_model=ChatResponse, responses={**_SSE, **_BACKGROUND, **_ERRORS})
async def chat_turn(
    request: Request,
    response: Response,
    body: ChatBody,
    user: UserDep,
    chat: ChatDep,
    streams: StreamsDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    shutdown: ShutdownDep,
    request_id: RequestIdDep,
    idempotency_key: IdempotencyKey = None,
) -> ChatResponse | JSONResponse | StreamingResponse:
    """Answer the thread's newest user message (`"stream": true` streams it;
    `"background": true` answers 202 at once)."""
    shutdown.refuse_new_runs()
    started = await _start(body, user, chat, settings, request_id, idempotency_key, body.stream)
    if body.background:
        return _accepted(started)
    if body.stream:
        return await _sse_response(
            started, body, user, chat, streams, _Streaming(settings, metrics, shutdown)
        )
    if isinstance(started, Repeat):
        ended: RunEnded | None = started.ended
    else:
        # A queued run's end comes from whichever replica drives it. At the shutdown's
        # deadline the run is handed over: its answer comes later.
        waiting = (
            streams.wait_ended(started.thread_id, started.run_id)
            if isinstance(started, Accepted)
            else started.wait_ended()
        )
        ended = await shutdown.unless_streams_end(waiting)
        if ended is None and shutdown.draining:
            raise shutdown.handed_over(started.thread_id, started.run_id)
    if ended is not None and ended.status == "cancelled" and ended.message is None:
        raise RunCancelledBeforeStart(ended.thread_id, ended.run_id)
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
    streams: StreamsDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    shutdown: ShutdownDep,
    request_id: RequestIdDep,
    idempotency_key: IdempotencyKey = None,
) -> StreamingResponse:
    """SSE: (`run.queued`), `run.started`, `delta`s, then one of `run.completed`,
    `run.failed`, `run.cancelled` (none when this replica shuts down meanwhile: resume
    at `Location`)."""
    shutdown.refuse_new_runs()
    started = await _start(body, user, chat, settings, request_id, idempotency_key, True)
    return await _sse_response(
        started, body, user, chat, streams, _Streaming(settings, metrics, shutdown)
    )


def _accepted(started: Started) -> JSONResponse:
    status: Any
    if isinstance(started, Repeat):
        thread_id, run_id, status = (
            started.ended.thread_id,
            started.ended.run_id,
            started.ended.status,
        )
    elif isinstance(started, Accepted):
        thread_id, run_id, status = started.thread_id, started.run_id, started.status
    else:
        thread_id, run_id = started.thread_id, started.run_id
        status = "running" if started.ended is None else started.ended.status
    accepted = RunAccepted(thread_id=thread_id, run_id=run_id, status=status)
    return JSONResponse(
        accepted.model_dump(mode="json"),
        status_code=202,
        headers={"Location": stream_location(thread_id, run_id)},
    )


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


@dataclass(frozen=True, slots=True)
class _Streaming:
    """What every SSE response of these routes is framed with."""

    settings: Settings
    metrics: Metrics
    shutdown: Shutdown


async def _sse_response(
    started: Started,
    body: ChatRequest,
    user: str,
    chat: ChatService,
    streams: RunStreams,
    framing: _Streaming,
) -> StreamingResponse:
    ping, metrics, shutdown = framing.settings.sse_ping_seconds, framing.metrics, framing.shutdown
    if isinstance(started, Repeat):
        thread_id, run_id = started.ended.thread_id, started.ended.run_id
        replayed = with_ids(_replayed(started), started.attempt)
        body_events = sse_body(replayed, ping, metrics, shutdown)
    else:
        thread_id, run_id = started.thread_id, started.run_id
        events: AsyncIterator[Sent]
        if isinstance(started, Accepted):
            events = await streams.open(user, thread_id, run_id, None)
        else:
            events = with_ids(started.follow(), started.attempt)
        left = partial(chat.cancel_soon, user, thread_id, run_id)
        body_events = sse_body(
            events,
            ping,
            metrics,
            shutdown,
            partial(_unrecorded_error, started),
            on_disconnect=left if body.on_disconnect == "cancel" else None,
        )
    return StreamingResponse(
        body_events,
        media_type="text/event-stream",
        headers={**SSE_HEADERS, "Location": stream_location(thread_id, run_id)},
    )


async def _replayed(repeat: Repeat) -> AsyncIterator[RunEvent]:
    ended = repeat.ended
    yield RunStarted(ended.thread_id, ended.run_id, ended.version, [])
    if ended.message is not None and ended.message.content:
        yield RunDelta(ended.message.content)
    yield ended


def _unrecorded_error(started: Started) -> dict[str, Any]:
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
