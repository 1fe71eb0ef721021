"""Runs: a LangGraph run is a native run of the thread (the same start, queue, double-
texting policies, crash-resume and resumable stream), asked for in LangGraph's words."""

from __future__ import annotations

import json
import re
from functools import partial
from typing import Annotated, Any, Literal
from urllib.parse import quote, urlencode

from fastapi import APIRouter, Header, Path, Query, Response, status
from fastapi.responses import JSONResponse, StreamingResponse
from pydantic import ValidationError

from main_backend.api.deps import ChatDep, RunsDep, ThreadsDep, UserDep
from main_backend.api.errors import error_responses
from main_backend.api.langgraph import messages as lg
from main_backend.api.langgraph.assistants import check_assistant
from main_backend.api.langgraph.routing import LangGraphRoute
from main_backend.api.langgraph.schemas import NEW_THREAD_ID, RunCreate
from main_backend.api.langgraph.stream import (
    JOIN_MODES,
    LangGraphFraming,
    resume_point,
    stream_modes,
)
from main_backend.api.routes.chat import (
    SSE_RESPONSE,
    START_ERRORS,
    Started,
    Turn,
    TurnDep,
    run_end,
    start_turn,
    started_run,
    stream_response,
    unrecorded_response,
)
from main_backend.api.schemas import ChatRequest, Text
from main_backend.api.streaming import sse_body
from main_backend.conversation.graph import RunEnded
from main_backend.conversation.runs import answered_path, owned_run
from main_backend.conversation.threads import ThreadService
from main_backend.errors import InvalidRequest
from main_backend.values import MAX_INTEGER
from stubichat_common.sse import SSE_HEADERS

router = APIRouter(route_class=LangGraphRoute)

_STARTS = {**START_ERRORS, **error_responses("assistant_not_found")}
_STREAMS = {**SSE_RESPONSE, **_STARTS}
_RUN = error_responses("run_not_found")
_JOIN = error_responses("run_not_found", "invalid_request", "shutting_down")
ThreadId = Annotated[Text, Path(min_length=1, max_length=64)]
RunId = Annotated[Text, Path(min_length=1, max_length=64)]
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)]
# The native request's fields and where a LangGraph client gave them, for its errors.
_FIELDS = {"messages": "input.messages", "thread_id": "thread_id", "if_busy": "multitask_strategy"}


def _locations(
    thread_id: str, run_id: str, then: str, modes: frozenset[str] = frozenset()
) -> dict[str, str]:
    """The run (`Content-Location`: the SDKs read the run's id from it) and where to go
    next (`Location`: where a cut-off client reconnects), relative to the API's root.
    A stream's modes are not stored, and the SDKs reconnect to `Location` without
    `stream_mode` (keeping a query given there): a stream's `Location` names them."""
    run = f"/threads/{quote(thread_id, safe='')}/runs/{quote(run_id, safe='')}"
    query = urlencode([("stream_mode", m) for m in sorted(modes)])
    return {"Content-Location": run, "Location": f"{run}/{then}" + (f"?{query}" if query else "")}


async def _start(
    turn: Turn,
    threads: ThreadService,
    thread_id: str | None,
    body: RunCreate,
    *,
    background: bool = False,
    streamed: bool = False,
) -> Started:
    check_assistant(body.assistant_id)
    body.refuse_unsupported()
    stream_modes(body.stream_mode)  # refused alike whether this request streams or not
    if body.input is None:
        raise InvalidRequest("a run of the chat graph needs input: {messages: [...]}", "input")
    unknown = sorted(set(body.input) - {"messages"})
    if unknown:
        raise InvalidRequest(f"the chat graph's input has only messages (not {unknown})", "input")
    messages = lg.chat_messages(body.input.get("messages"))
    fields: dict[str, Any] = {
        "thread_id": thread_id,
        "messages": messages,
        **body.knobs(),
        "if_busy": body.multitask_strategy,
        "on_disconnect": body.on_disconnect,
        "background": background,
        "stream": streamed,
    }
    try:
        # As JSON, so the native body's checks judge it exactly as they judge /chat/'s.
        chat_body = ChatRequest.model_validate_json(json.dumps(fields))
    except ValidationError as exc:
        error = exc.errors()[0]
        where = [str(part) for part in error["loc"]]
        head = _FIELDS.get(where[0], f"context.{where[0]}") if where else "body"
        raise InvalidRequest(error["msg"], ".".join([head, *where[1:]])) from None
    creates = body.if_not_exists == "create"
    if creates and thread_id is not None and not re.fullmatch(NEW_THREAD_ID, thread_id):
        raise InvalidRequest(
            "a new thread's id is 1 to 64 of A-Z, a-z, 0-9 and . _ ~ -", "thread_id"
        )
    await _check_checkpoint(threads, turn.user, thread_id, body)
    # The thread is marked as the chat graph's (LangGraph's UIs list threads by
    # `graph_id`), or created, in the run's own append: a refused run writes nothing.
    return await start_turn(
        turn,
        chat_body,
        None,
        streamed,
        thread_metadata=lg.GRAPH_METADATA,
        create_thread=creates,
    )


async def _check_checkpoint(
    threads: ThreadService, user: str, thread_id: str | None, body: RunCreate
) -> None:
    """A run starts from the thread's current state: a checkpoint the client names (its
    head) must be that one."""
    asked = body.asked_checkpoint()
    if asked is None:
        return
    thread = None if thread_id is None else await threads.store.get_thread(thread_id, user)
    current = lg.empty_checkpoint_id(thread_id or "")
    if thread is not None and thread.head_id is not None:
        current = thread.head_id
    if asked != current or thread_id is None:
        raise InvalidRequest(
            "a run starts from the thread's current state; branching from an earlier "
            "checkpoint is not supported yet (use the native edit and regenerate routes)",
            "checkpoint",
        )


async def _final_values(threads: ThreadService, user: str, ended: RunEnded) -> dict[str, Any]:
    """What `wait` and `join` answer: the state's values after the run, or its error."""
    if ended.status == "failed":
        error = ended.error or {}
        return {
            "__error__": {
                "error": str(error.get("code", "internal_error")),
                "message": str(error.get("message", "the run failed")),
            }
        }
    if ended.cancelled_by == "rollback" or (ended.status == "cancelled" and not ended.message):
        # Its input left the history, or it never started: the thread's state as it is.
        _, path = await threads.path(user, ended.thread_id)
        return lg.values(path)
    path = await answered_path(threads.store, ended.thread_id, ended.run_id)
    return lg.values([*path, ended.message] if ended.message else path)


async def _streamed(
    turn: Turn, threads: ThreadService, thread_id: str | None, body: RunCreate
) -> StreamingResponse:
    modes = stream_modes(body.stream_mode)
    started = await _start(turn, threads, thread_id, body, streamed=True)
    thread, run, attempt = started_run(started)
    framing = LangGraphFraming(threads.store, thread, run, attempt, modes, from_start=True)
    headers = _locations(thread, run, "stream", modes)
    return await stream_response(turn, started, body.on_disconnect, framing, headers)


async def _created(
    turn: Turn, threads: ThreadService, thread_id: str | None, body: RunCreate
) -> JSONResponse:
    started = await _start(turn, threads, thread_id, body, background=True)
    thread, run, _ = started_run(started)
    found = await owned_run(threads.store, turn.user, thread, run)
    return JSONResponse(lg.run(found), headers=_locations(thread, run, "stream"))


async def _waited(
    turn: Turn, threads: ThreadService, thread_id: str | None, body: RunCreate
) -> JSONResponse:
    started = await _start(turn, threads, thread_id, body)
    thread, run, _ = started_run(started)
    ended = await run_end(turn, started)
    if ended is None:
        return unrecorded_response(turn, started)
    values = await _final_values(threads, turn.user, ended)
    return JSONResponse(values, headers=_locations(thread, run, "join"))


@router.post(
    "/threads/{thread_id}/runs/stream", response_class=StreamingResponse, responses=_STREAMS
)
async def stream_run(
    thread_id: ThreadId, body: RunCreate, turn: TurnDep, threads: ThreadsDep
) -> StreamingResponse:
    """Start a run on the thread and stream it."""
    return await _streamed(turn, threads, thread_id, body)


@router.post("/threads/{thread_id}/runs", responses=_STARTS)
async def create_run(
    thread_id: ThreadId, body: RunCreate, turn: TurnDep, threads: ThreadsDep
) -> JSONResponse:
    """Start a run in the background: the run, at once."""
    return await _created(turn, threads, thread_id, body)


@router.post("/threads/{thread_id}/runs/wait", responses=_STARTS)
async def wait_run(
    thread_id: ThreadId, body: RunCreate, turn: TurnDep, threads: ThreadsDep
) -> JSONResponse:
    """Start a run and answer the state's values once it ends."""
    return await _waited(turn, threads, thread_id, body)


@router.post("/runs/stream", response_class=StreamingResponse, responses=_STREAMS)
async def stream_stateless_run(
    body: RunCreate, turn: TurnDep, threads: ThreadsDep
) -> StreamingResponse:
    """A run on a new thread (kept: it is a thread like any other), streamed."""
    return await _streamed(turn, threads, None, body)


@router.post("/runs/wait", responses=_STARTS)
async def wait_stateless_run(body: RunCreate, turn: TurnDep, threads: ThreadsDep) -> JSONResponse:
    return await _waited(turn, threads, None, body)


@router.post("/runs", responses=_STARTS)
async def create_stateless_run(body: RunCreate, turn: TurnDep, threads: ThreadsDep) -> JSONResponse:
    return await _created(turn, threads, None, body)


@router.get("/threads/{thread_id}/runs", responses=error_responses("thread_not_found"))
async def list_runs(
    thread_id: ThreadId,
    user: UserDep,
    runs: RunsDep,
    limit: Annotated[int, Query(ge=1, le=1000)] = 10,
    offset: Annotated[int, Query(ge=0, le=MAX_INTEGER)] = 0,
    status: Annotated[str | None, Query(max_length=20)] = None,
) -> list[dict[str, Any]]:
    """The thread's runs, newest first."""
    # A LangGraph status no run here has (`timeout`) matches none.
    native = lg.NATIVE_RUN_STATUSES.get(status) if status else None
    statuses = None if not status else [native] if native else []
    found = await runs.slice(user, thread_id, limit, offset, statuses)
    return [lg.run(r) for r in found]


@router.get("/threads/{thread_id}/runs/{run_id}", responses=_RUN)
async def get_run(
    thread_id: ThreadId, run_id: RunId, user: UserDep, runs: RunsDep
) -> dict[str, Any]:
    return lg.run(await runs.get(user, thread_id, run_id))


@router.get("/threads/{thread_id}/runs/{run_id}/join", responses=_JOIN)
async def join_run(
    thread_id: ThreadId, run_id: RunId, turn: TurnDep, threads: ThreadsDep
) -> dict[str, Any]:
    """The state's values once the run ends."""
    await owned_run(threads.store, turn.user, thread_id, run_id)
    ended = await _ended(turn, thread_id, run_id)
    return await _final_values(threads, turn.user, ended)


async def _ended(turn: Turn, thread_id: str, run_id: str) -> RunEnded:
    shutdown = turn.shutdown
    ended = await shutdown.unless_streams_end(turn.streams.wait_ended(thread_id, run_id))
    if ended is None:  # this replica stops: ask again elsewhere
        raise shutdown.handed_over(thread_id, run_id)
    return ended


@router.get(
    "/threads/{thread_id}/runs/{run_id}/stream",
    response_class=StreamingResponse,
    responses={**SSE_RESPONSE, **_JOIN},
)
async def join_run_stream(
    thread_id: ThreadId,
    run_id: RunId,
    turn: TurnDep,
    threads: ThreadsDep,
    stream_mode: Annotated[list[str] | None, Query(max_length=10)] = None,
    cancel_on_disconnect: bool = False,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """Join the run's stream: from the start (no `Last-Event-ID`, or `-1`), or right
    after the event with that id."""
    # The Python SDK's join_stream sends `stream_mode=` (empty) when given no mode.
    asked = [mode for mode in stream_mode or [] if mode]
    modes = stream_modes(asked) if asked else JOIN_MODES
    after, skip, from_start = resume_point(last_event_id)
    streams, shutdown = turn.streams, turn.shutdown
    events = await streams.open(turn.user, thread_id, run_id, after)
    if shutdown.streams_ended.is_set():  # it would end at once: 503, to resume elsewhere
        shutdown.refuse_new_runs()
    attempt = await streams.progress.attempt(run_id)
    framing = LangGraphFraming(
        threads.store,
        thread_id,
        run_id,
        attempt,
        modes,
        from_start=from_start,
        after=after,
        skip=skip,
    )
    left = partial(turn.chat.cancel_soon, turn.user, thread_id, run_id)
    body = sse_body(
        events,
        turn.settings.sse_ping_seconds,
        turn.metrics,
        shutdown,
        on_disconnect=left if cancel_on_disconnect else None,
        framing=framing,
    )
    headers = {**SSE_HEADERS, **_locations(thread_id, run_id, "stream", modes)}
    return StreamingResponse(body, media_type="text/event-stream", headers=headers)


@router.post(
    "/threads/{thread_id}/runs/{run_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    responses={
        204: {"description": "with wait=1: the run has stopped"},
        **error_responses("run_not_found", "no_active_run", "shutting_down"),
    },
)
async def cancel_run(
    thread_id: ThreadId,
    run_id: RunId,
    turn: TurnDep,
    chat: ChatDep,
    wait: bool = False,
    action: Literal["interrupt", "rollback"] = "interrupt",
) -> Response:
    """Stop the run (`rollback`: and take its input out of the history); with `wait`,
    answer once it has stopped."""
    reason: Literal["user", "rollback"] = "rollback" if action == "rollback" else "user"
    await chat.cancel(turn.user, thread_id, run_id, reason)
    if not wait:
        return Response(status_code=status.HTTP_202_ACCEPTED)
    await _ended(turn, thread_id, run_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
