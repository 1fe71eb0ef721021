"""Run routes: a thread's runs as resources, read and cancelled one by one."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query, status

from main_backend.api.deps import ChatDep, RunsDep, UserDep
from main_backend.api.errors import error_responses
from main_backend.api.routes.threads import ThreadId
from main_backend.api.schemas import CancelAccepted, Run, RunList, Text
from stubichat_common.routing import JSONRoute

router = APIRouter(prefix="/threads/{thread_id}/runs", tags=["runs"], route_class=JSONRoute)

RunId = Annotated[Text, Path(min_length=1, max_length=64)]


def stream_location(thread_id: str, run_id: str) -> str:
    """Where a client joins (or rejoins) a run's stream."""
    return f"/threads/{thread_id}/runs/{run_id}/stream"


@router.get("", response_model=RunList, responses=error_responses("thread_not_found"))
async def list_runs(
    thread_id: ThreadId,
    user: UserDep,
    runs: RunsDep,
    limit: Annotated[int, Query(ge=1, le=100)] = 20,
    cursor: Annotated[Text | None, Query(max_length=500)] = None,
) -> RunList:
    """The thread's runs, newest first."""
    page, next_cursor = await runs.page(user, thread_id, limit, cursor)
    return RunList(runs=[Run.of(r) for r in page], next_cursor=next_cursor)


@router.get(
    "/{run_id}",
    response_model=Run,
    responses=error_responses("run_not_found"),
)
async def get_run(thread_id: ThreadId, run_id: RunId, user: UserDep, runs: RunsDep) -> Run:
    return Run.of(await runs.get(user, thread_id, run_id))


@router.post(
    "/{run_id}/cancel",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=CancelAccepted,
    responses=error_responses("run_not_found", "no_active_run"),
)
async def cancel_run(
    thread_id: ThreadId, run_id: RunId, user: UserDep, chat: ChatDep
) -> CancelAccepted:
    """Stop this run if it is still going, on whichever replica drives it."""
    return CancelAccepted(run_id=await chat.cancel(user, thread_id, run_id))
