"""Thread routes: a user's threads, their messages, and cancelling a run."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Body, Path, Query, Response, status

from main_backend.api.deps import ChatDep, RequestIdDep, ThreadsDep, UserDep
from main_backend.api.errors import error_responses
from main_backend.api.schemas import (
    CancelAccepted,
    CheckoutRequest,
    ForkRequest,
    MessageList,
    PathMessage,
    Text,
    Thread,
    ThreadCreate,
    ThreadList,
    ThreadPatch,
)
from main_backend.errors import InvalidRequest
from main_backend.values import MAX_VERSION
from stubichat_common.routing import JSONRoute

router = APIRouter(prefix="/threads", tags=["threads"], route_class=JSONRoute)

ThreadId = Annotated[Text, Path(min_length=1, max_length=64)]
_NOT_FOUND = error_responses("thread_not_found")


@router.post("", status_code=status.HTTP_201_CREATED, response_model=Thread)
async def create_thread(
    user: UserDep,
    threads: ThreadsDep,
    request_id: RequestIdDep,
    body: Annotated[ThreadCreate, Body(default_factory=ThreadCreate)],
) -> Thread:
    """An empty body is `{}`, as on every POST whose fields are all optional."""
    return Thread.of(await threads.create(user, body.title, body.metadata, request_id))


@router.get("", response_model=ThreadList)
async def list_threads(
    user: UserDep,
    threads: ThreadsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Text | None, Query(max_length=500)] = None,
) -> ThreadList:
    """The user's threads, most recently updated first."""
    page, next_cursor = await threads.page(user, limit, cursor)
    return ThreadList(threads=[Thread.of(t) for t in page], next_cursor=next_cursor)


@router.get("/{thread_id}", response_model=Thread, responses=_NOT_FOUND)
async def get_thread(thread_id: ThreadId, user: UserDep, threads: ThreadsDep) -> Thread:
    return Thread.of(await threads.get(user, thread_id))


@router.patch("/{thread_id}", response_model=Thread, responses=_NOT_FOUND)
async def update_thread(
    thread_id: ThreadId,
    body: ThreadPatch,
    user: UserDep,
    threads: ThreadsDep,
    request_id: RequestIdDep,
) -> Thread:
    changes = body.model_dump(exclude_unset=True)
    if not changes:
        raise InvalidRequest("give a title or metadata to change", "body")
    if "metadata" in changes and changes["metadata"] is None:
        raise InvalidRequest("metadata must be an object", "metadata")
    return Thread.of(await threads.update(user, thread_id, changes, request_id))


@router.delete("/{thread_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_NOT_FOUND)
async def delete_thread(
    thread_id: ThreadId, user: UserDep, threads: ThreadsDep, request_id: RequestIdDep
) -> Response:
    await threads.delete(user, thread_id, request_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{thread_id}/messages", response_model=MessageList, responses=_NOT_FOUND)
async def list_messages(
    thread_id: ThreadId,
    user: UserDep,
    threads: ThreadsDep,
    after_version: Annotated[int, Query(ge=0, le=MAX_VERSION)] = 0,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> MessageList:
    """The active path (root → active leaf), oldest first; `next_cursor` is the
    `after_version` of the next page."""
    page, next_cursor = await threads.messages(user, thread_id, after_version, limit)
    return MessageList(
        messages=[PathMessage.listed(e.message, e.sibling_ids) for e in page],
        next_cursor=next_cursor,
    )


@router.post(
    "/{thread_id}/checkout",
    response_model=MessageList,
    responses=error_responses(
        "thread_not_found", "message_not_found", "thread_busy", "version_conflict"
    ),
)
async def checkout(
    thread_id: ThreadId,
    body: CheckoutRequest,
    user: UserDep,
    threads: ThreadsDep,
    request_id: RequestIdDep,
    limit: Annotated[int, Query(ge=1, le=500)] = 100,
) -> MessageList:
    """Switch branches: the newest leaf under `message_id` becomes the active leaf. Answers
    the new active path's first page, as `GET /threads/{id}/messages` does."""
    await threads.checkout(user, thread_id, body.message_id, body.expected_version, request_id)
    return await list_messages(thread_id, user, threads, 0, limit)


@router.post(
    "/{thread_id}/fork",
    status_code=status.HTTP_201_CREATED,
    response_model=Thread,
    responses=_NOT_FOUND,
)
async def fork_thread(
    thread_id: ThreadId,
    user: UserDep,
    threads: ThreadsDep,
    request_id: RequestIdDep,
    body: Annotated[ForkRequest, Body(default_factory=ForkRequest)],
) -> Thread:
    """A new thread of yours holding this one's history up to `at_version` (default: all)."""
    return Thread.of(await threads.fork(user, thread_id, body.at_version, request_id))


@router.post(
    "/{thread_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CancelAccepted,
    responses=error_responses("thread_not_found", "no_active_run"),
)
async def cancel_run(thread_id: ThreadId, user: UserDep, chat: ChatDep) -> CancelAccepted:
    """Stop the active run on whichever replica drives it; its partial answer is kept."""
    return CancelAccepted(run_id=await chat.cancel(user, thread_id))
