"""Admin routes (Bearer ADMIN_TOKEN): every thread, the log, replays, the read models."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated, Any

import pydantic_core
from fastapi import APIRouter, Body, Depends, Path, Query
from fastapi.responses import StreamingResponse

from main_backend.api.deps import AdminDep, RequestIdDep, require_admin
from main_backend.api.errors import error_responses
from main_backend.api.schemas import (
    AdminThread,
    AdminThreadList,
    AssistantAnswer,
    Event,
    EventFeed,
    PromptMessage,
    PromptParams,
    RebuildResponse,
    ReplayPrompt,
    ReplayRequest,
    ReplayResponse,
    RerunResponse,
    Text,
    Thread,
    ThreadEventList,
    Usage,
    VerifyResponse,
)
from main_backend.conversation.admin import Replay
from main_backend.events.fold import MessageState, children
from main_backend.llm_client import LLM_CODES
from main_backend.values import MAX_INTEGER, MAX_VERSION
from stubichat_common.routing import JSONRoute

_AUTH: dict[int | str, dict[str, Any]] = {
    401: {"description": "unauthorized: no or wrong 'Authorization: Bearer <ADMIN_TOKEN>'"},
    403: {"description": "admin_disabled: ADMIN_TOKEN is not set"},
}
_NOT_FOUND = error_responses("thread_not_found")
_LLM_ERRORS = error_responses(*LLM_CODES)

router = APIRouter(
    prefix="/admin",
    tags=["admin"],
    dependencies=[Depends(require_admin)],
    responses=_AUTH,
    route_class=JSONRoute,
)

ThreadId = Annotated[Text, Path(min_length=1, max_length=64)]

# Messages serialised per chunk of a streamed replay.
_REPLAY_CHUNK = 500


@router.get("/threads", response_model=AdminThreadList)
async def list_threads(
    admin: AdminDep,
    owner: Annotated[Text | None, Query(min_length=1, max_length=255)] = None,
    include_deleted: bool = False,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Text | None, Query(max_length=500)] = None,
) -> AdminThreadList:
    """Every user's threads (or `owner`'s), most recently updated first."""
    page, next_cursor = await admin.list_threads(owner, include_deleted, limit, cursor)
    return AdminThreadList(threads=[AdminThread.of(t) for t in page], next_cursor=next_cursor)


@router.get("/threads/{thread_id}/events", response_model=ThreadEventList, responses=_NOT_FOUND)
async def thread_events(
    thread_id: ThreadId,
    admin: AdminDep,
    from_version: Annotated[int, Query(ge=1, le=MAX_VERSION)] = 1,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> ThreadEventList:
    """The thread's events (deleted threads included), oldest first."""
    page, next_from = await admin.thread_events(thread_id, from_version, limit)
    return ThreadEventList(events=[Event.of(e) for e in page], next_from_version=next_from)


@router.get(
    "/threads/{thread_id}/replay",
    response_model=ReplayResponse,
    responses={**_NOT_FOUND, 422: {"description": "invalid_request (at_version)"}},
)
async def replay(
    thread_id: ThreadId,
    admin: AdminDep,
    at_version: Annotated[int | None, Query(le=MAX_VERSION)] = None,
) -> StreamingResponse:
    """The thread rebuilt from its events up to `at_version` (default: all): every
    message of every branch, the path active then marked `active`; and the prompt a turn
    at that version sends to the LLM agent."""
    found = await admin.replay(thread_id, at_version)
    # A thread of thousands of messages: streamed in chunks, each message serialised from
    # a plain dict (what `ReplayedMessage` serialises to), not validated as a model three
    # times over; the small parts go through their models.
    return StreamingResponse(_replay_body(found), media_type="application/json")


def _replay_body(found: Replay) -> Iterator[bytes]:
    tree = children(found.messages)
    thread = Thread.of(found.thread).model_dump_json()
    yield f'{{"at_version":{found.at_version},"thread":{thread},"messages":['.encode()
    messages = found.messages
    for start in range(0, len(messages), _REPLAY_CHUNK):
        chunk = [
            _replayed(m, tree.get(m.parent_id, [m.message_id]))
            for m in messages[start : start + _REPLAY_CHUNK]
        ]
        body = pydantic_core.to_json(chunk)[1:-1]
        yield body if start == 0 else b"," + body
    prompt = _prompt(found, found.model, found.params).model_dump_json()
    yield f'],"prompt":{prompt}}}'.encode()


def _replayed(message: MessageState, sibling_ids: list[str]) -> dict[str, Any]:
    """`ReplayedMessage.replayed(message, sibling_ids)`, as it serialises."""
    return {
        "id": message.message_id,
        "role": message.role,
        "content": message.content,
        "created_at": message.created_at,
        "version": message.version,
        "run_id": message.run_id,
        "parent_id": message.parent_id,
        "sibling_ids": sibling_ids,
        "rolled_back": message.rolled_back,
        "active": message.active,
    }


@router.post(
    "/threads/{thread_id}/replay",
    response_model=RerunResponse,
    responses={**_NOT_FOUND, 422: {"description": "invalid_request"}, **_LLM_ERRORS},
)
async def rerun(
    thread_id: ThreadId,
    admin: AdminDep,
    request_id: RequestIdDep,
    body: Annotated[ReplayRequest, Body(default_factory=ReplayRequest)],
) -> RerunResponse:
    """Send the replayed prompt to the LLM again (optionally with another model or
    params) and return the answer; nothing is appended."""
    answer = await admin.rerun(
        thread_id,
        body.at_version,
        model=body.model,
        temperature=body.temperature,
        max_tokens=body.max_tokens,
        request_id=request_id,
    )
    return RerunResponse(
        at_version=answer.replay.at_version,
        prompt=_prompt(answer.replay, answer.model, answer.params),
        message=AssistantAnswer(content=answer.content),
        usage=Usage(**answer.usage) if answer.usage else None,
        model=answer.answered_by,
    )


@router.get("/events", response_model=EventFeed)
async def event_feed(
    admin: AdminDep,
    after_position: Annotated[int, Query(ge=0, le=MAX_INTEGER)] = 0,
    limit: Annotated[int, Query(ge=1, le=1000)] = 500,
) -> EventFeed:
    """Every thread's events in feed order; following `next_after_position` never
    misses one, even one whose transaction committed late."""
    page, next_after = await admin.events_after(after_position, limit)
    return EventFeed(events=[Event.of(e) for e in page], next_after_position=next_after)


@router.post("/projections/rebuild", response_model=RebuildResponse)
async def rebuild_projections(admin: AdminDep) -> RebuildResponse:
    """Replace the read models (threads, messages, runs) by a fold of the whole log."""
    report = await admin.rebuild_projections()
    return RebuildResponse(
        events=report.events,
        threads=report.threads,
        messages=report.messages,
        runs=report.runs,
        duration_ms=report.duration_ms,
    )


@router.get("/projections/verify", response_model=VerifyResponse)
async def verify_projections(admin: AdminDep) -> VerifyResponse:
    """Compare the read models with a fresh fold of the log."""
    report = await admin.verify_projections()
    return VerifyResponse(ok=report.ok, mismatches=report.mismatches)


def _prompt(replay: Replay, model: str, params: dict[str, Any]) -> ReplayPrompt:
    return ReplayPrompt(
        model=model,
        params=PromptParams(**params),
        messages=[PromptMessage(**m) for m in replay.prompt.messages],
    )
