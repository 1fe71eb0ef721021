"""Joining a run's stream, on any replica, from its start or after the last event seen."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, Path
from fastapi.responses import StreamingResponse

from main_backend.api.deps import MetricsDep, SettingsDep, ShutdownDep, StreamsDep, UserDep
from main_backend.api.errors import error_responses
from main_backend.api.schemas import Text
from main_backend.api.streaming import sse_body
from stubichat_common.routing import JSONRoute
from stubichat_common.sse import SSE_HEADERS

router = APIRouter(prefix="/threads", tags=["threads"], route_class=JSONRoute)

ThreadId = Annotated[Text, Path(min_length=1, max_length=64)]
RunId = Annotated[Text, Path(min_length=1, max_length=64)]
LastEventId = Annotated[str | None, Header(alias="Last-Event-ID", max_length=64)]

_SSE: dict[int | str, dict[str, Any]] = {200: {"content": {"text/event-stream": {}}}}


@router.get(
    "/{thread_id}/runs/{run_id}/stream",
    response_class=StreamingResponse,
    responses={
        **_SSE,
        **error_responses("thread_not_found", "run_not_found", "invalid_request", "shutting_down"),
    },
)
async def join_run_stream(
    thread_id: ThreadId,
    run_id: RunId,
    user: UserDep,
    streams: StreamsDep,
    settings: SettingsDep,
    metrics: MetricsDep,
    shutdown: ShutdownDep,
    last_event_id: LastEventId = None,
) -> StreamingResponse:
    """SSE, the events of `/chat/stream` with the same ids: from `run.started`, or after
    `Last-Event-ID`; live while the run goes on, closed after its terminal event (or,
    without it, when this replica shuts down: resume elsewhere)."""
    events = await streams.open(user, thread_id, run_id, last_event_id)
    if shutdown.streams_ended.is_set():  # it would end at once: 503, to resume elsewhere
        shutdown.refuse_new_runs()
    return StreamingResponse(
        sse_body(events, settings.sse_ping_seconds, metrics, shutdown),
        media_type="text/event-stream",
        headers=SSE_HEADERS,
    )
