"""Chat routes: a turn answered whole (`/chat/`) or streamed as SSE (`/chat/stream`), and
the turns that answer again from an earlier message (edit a question, regenerate an
answer), which answer exactly alike."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, replace
from functools import partial
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Body, Depends, Header, Path, Request, Response
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
from main_backend.api.schemas import (
    ChatRequest,
    ChatResponse,
    EditRequest,
    Message,
    MessageIn,
    RegenerateRequest,
    RunAccepted,
    Text,
    Usage,
)
from main_backend.api.streaming import NATIVE, Framing, sse_body
from main_backend.conversation.chat import Accepted, ChatService, Repeat
from main_backend.conversation.graph import RunDelta, RunEnded, RunStarted
from main_backend.conversation.idempotency import request_hash
from main_backend.conversation.runner import RunEvent, RunHandle
from main_backend.conversation.streams import RunStreams, Sent, with_ids
from main_backend.conversation.turns import ChatCommand, ChatMessage, Rebranch
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

START_ERRORS = error_responses(
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
SSE_RESPONSE: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {}}}}
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


@dataclass(frozen=True, slots=True)
class Turn:
    """What every route that starts a run works with (the LangGraph routes too)."""

    request: Request
    response: Response
    user: str
    chat: ChatService
    streams: RunStreams
    settings: Settings
    metrics: Metrics
    shutdown: Shutdown
    request_id: str | None
    idempotency_key: str | None


def _turn(
    request: Request,
    response: Response,
    user: UserDep,
    chat: ChatDep,
    streams: StreamsDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    shutdown: ShutdownDep,
    request_id: RequestIdDep,
    idempotency_key: IdempotencyKey = None,
) -> Turn:
    return Turn(
        request,
        response,
        user,
        chat,
        streams,
        settings,
        metrics,
        shutdown,
        request_id,
        idempotency_key,
    )


TurnDep = Annotated[Turn, Depends(_turn)]


async def start_turn(
    turn: Turn,
    body: ChatRequest,
    rebranch: Rebranch | None,
    streamed: bool,
    *,
    thread_metadata: dict[str, Any] | None = None,
    create_thread: bool = False,
) -> Started:
    """Start (or queue) the run that `body` asks for, or find the one its idempotency key
    already started. (`thread_metadata`, `create_thread`: see `ChatCommand`.)"""
    turn.shutdown.refuse_new_runs()
    if body.background and streamed:
        raise InvalidRequest(
            "a background run answers 202 at once: join its stream at the Location it "
            "gives instead of asking for a stream",
            "background",
        )
    command = replace(
        to_command(body, turn.user, turn.settings, turn.request_id),
        rebranch=rebranch,
        thread_metadata=thread_metadata,
        create_thread=create_thread,
    )
    asked = body.model_dump(mode="json", exclude={"stream", "on_disconnect"})
    if rebranch is not None:
        # One key names one request: the same text as an edit is another request.
        asked["rebranch"] = {"kind": rebranch.kind, "message_id": rebranch.message_id}
    return await turn.chat.start(
        command, turn.idempotency_key, request_hash(asked), background=body.background
    )


@router.post(
    "/chat/", response_model=ChatResponse, responses={**SSE_RESPONSE, **_BACKGROUND, **START_ERRORS}
)
async def chat_turn(
    body: ChatBody, turn: TurnDep
) -> ChatResponse | JSONResponse | StreamingResponse:
    """Answer the thread's newest user message (`"stream": true` streams it;
    `"background": true` answers 202 at once)."""
    return await _answer(turn, body, None)


@router.post(
    "/chat/stream", response_class=StreamingResponse, responses={**SSE_RESPONSE, **START_ERRORS}
)
async def chat_stream(body: ChatBody, turn: TurnDep) -> StreamingResponse:
    """SSE: (`run.queued`), `run.started`, `delta`s, then one of `run.completed`,
    `run.failed`, `run.cancelled` (none when this replica shuts down meanwhile: resume
    at `Location`)."""
    started = await start_turn(turn, body, None, True)
    return await stream_response(turn, started, body.on_disconnect)


Id = Annotated[Text, Path(min_length=1, max_length=64)]
_REBRANCH_ERRORS = {
    **SSE_RESPONSE,
    **_BACKGROUND,
    **START_ERRORS,
    **error_responses("message_not_found"),
}


@router.post(
    "/threads/{thread_id}/messages/{message_id}/edit",
    response_model=ChatResponse,
    responses=_REBRANCH_ERRORS,
    tags=["threads"],
)
async def edit_message(
    thread_id: Id, message_id: Id, body: EditRequest, turn: TurnDep
) -> ChatResponse | JSONResponse | StreamingResponse:
    """Ask an edited question: a sibling of the user message `message_id`, made the
    active leaf and answered exactly as `/chat/` answers."""
    chat_body = ChatRequest(
        thread_id=thread_id,
        messages=[MessageIn(role="user", content=body.content)],
        **body.model_dump(exclude={"content"}),
    )
    return await _answer(turn, chat_body, Rebranch("edit", message_id))


@router.post(
    "/threads/{thread_id}/messages/{message_id}/regenerate",
    response_model=ChatResponse,
    responses=_REBRANCH_ERRORS,
    tags=["threads"],
)
async def regenerate_message(
    thread_id: Id,
    message_id: Id,
    turn: TurnDep,
    body: Annotated[RegenerateRequest, Body(default_factory=RegenerateRequest)],
) -> ChatResponse | JSONResponse | StreamingResponse:
    """Answer the question of the assistant message `message_id` again, with the prompt
    it had: a sibling of it, made the active leaf, answered exactly as `/chat/` answers."""
    chat_body = ChatRequest(thread_id=thread_id, **body.model_dump())
    return await _answer(turn, chat_body, Rebranch("regenerate", message_id))


async def _answer(
    turn: Turn, body: ChatRequest, rebranch: Rebranch | None
) -> ChatResponse | JSONResponse | StreamingResponse:
    started = await start_turn(turn, body, rebranch, body.stream)
    if body.background:
        return _accepted(started)
    if body.stream:
        return await stream_response(turn, started, body.on_disconnect)
    ended = await run_end(turn, started)
    if ended is not None and ended.status == "cancelled" and ended.message is None:
        raise RunCancelledBeforeStart(ended.thread_id, ended.run_id)
    if ended is None:
        return unrecorded_response(turn, started)
    if ended.status == "failed":
        return _failed_response(turn.request, ended)
    turn.response.headers["Location"] = stream_location(ended.thread_id, ended.run_id)
    return _chat_response(ended)


async def run_end(turn: Turn, started: Started) -> RunEnded | None:
    """The run's recorded end, once it has one; None if it could not be recorded. At the
    shutdown's deadline the run is handed over (`ShuttingDown`): its answer comes later."""
    shutdown = turn.shutdown
    if isinstance(started, Repeat):
        ended: RunEnded | None = started.ended
    else:
        # A queued run's end comes from whichever replica drives it. At the shutdown's
        # deadline the run is handed over: its answer comes later.
        waiting = (
            turn.streams.wait_ended(started.thread_id, started.run_id)
            if isinstance(started, Accepted)
            else started.wait_ended()
        )
        ended = await shutdown.unless_streams_end(waiting)
        if ended is None and shutdown.draining:
            raise shutdown.handed_over(started.thread_id, started.run_id)
    return ended


def unrecorded_response(turn: Turn, started: Started) -> JSONResponse:
    """The error of a run whose end could not be recorded: the database, or else."""
    error = started.error if isinstance(started, RunHandle) else None
    if error is not None and is_database_unavailable(error):
        return database_unavailable_response(turn.request, error)
    return error_response(
        turn.request,
        500,
        "internal_error",
        "the answer could not be recorded; it will be retried",
    )


def _accepted(started: Started) -> JSONResponse:
    thread_id, run_id, _ = started_run(started)
    status: Any
    if isinstance(started, Repeat):
        status = started.ended.status
    elif isinstance(started, Accepted):
        status = started.status
    else:
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


def started_run(started: Started) -> tuple[str, str, int]:
    """The thread, run and attempt a start names."""
    if isinstance(started, Repeat):
        return started.ended.thread_id, started.ended.run_id, started.attempt
    attempt = started.attempt if isinstance(started, RunHandle) else 1
    return started.thread_id, started.run_id, attempt


async def stream_response(
    turn: Turn,
    started: Started,
    on_disconnect: Literal["continue", "cancel"],
    framing: Framing = NATIVE,
    headers: dict[str, str] | None = None,
) -> StreamingResponse:
    """The run's stream as SSE, framed by `framing`, with a `Location` to resume at (or
    `headers`, for another API surface)."""
    user, chat, streams = turn.user, turn.chat, turn.streams
    ping, metrics, shutdown = turn.settings.sse_ping_seconds, turn.metrics, turn.shutdown
    thread_id, run_id, _ = started_run(started)
    if isinstance(started, Repeat):
        replayed = with_ids(_replayed(started), started.attempt)
        body_events = sse_body(replayed, ping, metrics, shutdown, framing=framing)
    else:
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
            on_disconnect=left if on_disconnect == "cancel" else None,
            framing=framing,
        )
    return StreamingResponse(
        body_events,
        media_type="text/event-stream",
        headers={**SSE_HEADERS, **(headers or {"Location": stream_location(thread_id, run_id)})},
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
