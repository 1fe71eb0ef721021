"""Threads, their state and history: the native threads, as LangGraph shows them."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path, Response, status

from main_backend.api.deps import RequestIdDep, ThreadsDep, UserDep
from main_backend.api.errors import error_responses
from main_backend.api.langgraph import messages as lg
from main_backend.api.langgraph.routing import LangGraphRoute
from main_backend.api.langgraph.schemas import (
    Checkpoint,
    HistoryRequest,
    ThreadCreate,
    ThreadPatch,
    ThreadSearch,
    checkpoint_id,
)
from main_backend.api.schemas import Text
from main_backend.conversation.threads import ThreadFilter, ThreadService
from main_backend.errors import ThreadExists
from main_backend.events.fold import MessageState, ThreadState

router = APIRouter(prefix="/threads", route_class=LangGraphRoute)

_MISSING = error_responses("thread_not_found")
_AT = error_responses("thread_not_found", "message_not_found")
ThreadId = Annotated[Text, Path(min_length=1, max_length=64)]


@router.post("", responses=error_responses("thread_exists"))
async def create_thread(
    user: UserDep,
    threads: ThreadsDep,
    request_id: RequestIdDep,
    body: Annotated[ThreadCreate, Body(default_factory=ThreadCreate)],
) -> dict[str, Any]:
    body.refuse_unsupported()
    try:
        thread = await threads.create(user, None, body.metadata, request_id, body.thread_id)
    except ThreadExists:
        if body.if_exists != "do_nothing" or body.thread_id is None:
            raise
        thread = await threads.get(user, body.thread_id)
    return lg.thread(thread, [])


@router.post("/search")
async def search_threads(
    user: UserDep,
    threads: ThreadsDep,
    body: Annotated[ThreadSearch, Body(default_factory=ThreadSearch)],
) -> list[dict[str, Any]]:
    """The user's threads, most recently updated first unless sorted otherwise."""
    body.refuse_unsupported()
    if body.status in ("interrupted", "error"):
        return []  # the chat graph never interrupts; a failed run leaves its thread idle
    busy = None if body.status is None else body.status == "busy"
    where = ThreadFilter(body.metadata, busy, None if body.ids is None else frozenset(body.ids))
    found = await threads.search(
        user, where, body.limit, body.offset, body.sort_by, body.sort_order == "desc"
    )
    paths = await threads.active_paths(found)
    return [lg.thread(t, paths[t.thread_id]) for t in found]


@router.get("/{thread_id}", responses=_MISSING)
async def get_thread(thread_id: ThreadId, user: UserDep, threads: ThreadsDep) -> dict[str, Any]:
    thread, path = await threads.path(user, thread_id)
    return lg.thread(thread, path)


@router.patch("/{thread_id}", responses=_MISSING)
async def patch_thread(
    thread_id: ThreadId,
    body: ThreadPatch,
    user: UserDep,
    threads: ThreadsDep,
    request_id: RequestIdDep,
) -> dict[str, Any]:
    """Merge `metadata` into the thread's (as LangGraph does)."""
    await threads.merge_metadata(user, thread_id, body.metadata, request_id)
    return lg.thread(*await threads.path(user, thread_id))


@router.delete("/{thread_id}", status_code=status.HTTP_204_NO_CONTENT, responses=_MISSING)
async def delete_thread(
    thread_id: ThreadId, user: UserDep, threads: ThreadsDep, request_id: RequestIdDep
) -> Response:
    await threads.delete(user, thread_id, request_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get("/{thread_id}/state", responses=_MISSING)
async def get_state(thread_id: ThreadId, user: UserDep, threads: ThreadsDep) -> dict[str, Any]:
    """The thread's current state: its active path."""
    thread, path = await threads.path(user, thread_id)
    return lg.state(thread, path)


@router.get("/{thread_id}/state/{checkpoint_id}", responses=_AT)
async def get_state_at(
    thread_id: ThreadId,
    checkpoint_id: Annotated[Text, Path(min_length=1, max_length=64)],
    user: UserDep,
    threads: ThreadsDep,
) -> dict[str, Any]:
    """The state at a checkpoint of any branch."""
    thread, path = await state_path(threads, user, thread_id, checkpoint_id)
    return lg.state(thread, path)


@router.post("/{thread_id}/state/checkpoint", responses=_AT)
async def post_state_at(
    thread_id: ThreadId,
    user: UserDep,
    threads: ThreadsDep,
    checkpoint: Annotated[Checkpoint, Body(embed=True)],
) -> dict[str, Any]:
    thread, path = await state_path(threads, user, thread_id, checkpoint.checkpoint_id)
    return lg.state(thread, path)


@router.post("/{thread_id}/history", responses=_AT)
async def get_history(
    thread_id: ThreadId,
    user: UserDep,
    threads: ThreadsDep,
    body: Annotated[HistoryRequest, Body(default_factory=HistoryRequest)],
) -> list[dict[str, Any]]:
    """Past states, newest first: the active path's (or, with `checkpoint`, that branch's)."""
    at = checkpoint_id(body.checkpoint)
    thread, path = await state_path(threads, user, thread_id, at)
    return lg.history(thread, path, body.limit, checkpoint_id(body.before), body.metadata)


async def state_path(
    threads: ThreadService, user: str, thread_id: str, checkpoint_id: str | None
) -> tuple[ThreadState, list[MessageState]]:
    """The thread and the path to the checkpoint (None: the active path)."""
    if checkpoint_id is None:
        return await threads.path(user, thread_id)
    if checkpoint_id == lg.empty_checkpoint_id(thread_id):
        return await threads.get(user, thread_id), []
    return await threads.path_at(user, thread_id, checkpoint_id)
