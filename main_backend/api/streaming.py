"""A run's stream as SSE, for `/chat/stream` and for joining a run (routes/run_stream.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

from main_backend.api.schemas import Message
from main_backend.conversation.graph import RunDelta, RunEnded, RunStarted
from main_backend.conversation.streams import RunQueued, RunRestarted, Sent, StreamEvent
from main_backend.metrics import Metrics
from main_backend.shutdown import Shutdown
from stubichat_common.sse import PING, sse_event, with_keepalive


class Framing:
    """How a run's stream is written as SSE: here the native API's events, one per
    stream event with its id; another API surface (the LangGraph one) subclasses it."""

    def opening(self) -> list[bytes]:
        """What the stream starts with, before its first event."""
        return []

    async def frames(self, sent: Sent) -> list[bytes]:
        name, data = sse_payload(sent.event)
        return [sse_event(name, data, sent.id)]

    def unended(self, error: dict[str, Any]) -> bytes:
        """The stream's source stopped before the run's end: its error, with no id."""
        return sse_event("run.failed", {"error": error, "partial_content": "", "version": None})


NATIVE = Framing()


async def sse_body(
    events: AsyncIterator[Sent],
    ping_seconds: float,
    metrics: Metrics,
    shutdown: Shutdown,
    unended: Callable[[], dict[str, Any]] | None = None,
    *,
    on_disconnect: Callable[[], None] | None = None,
    framing: Framing = NATIVE,
) -> AsyncIterator[bytes]:
    """The events framed (`framing`) with their ids, a ping after each `ping_seconds` of
    silence.

    A stream ends in one of three ways:

    - after the run's terminal event;
    - handed over by this replica's shutdown (`shutdown.draining`): at
      `shutdown.streams_ended`, or when the run stops being driven here, the stream
      just ends, with no terminal event and nothing made up: the client resumes on
      another replica with `Last-Event-ID`;
    - the source stopped before the run's end for another reason: `unended`, if
      given, is its error, sent (as `run.failed`) with no id, so a client that
      resumes after it resumes after the last event it really got.

    And it may be closed under it: the client went away. `on_disconnect`, if given, is
    called then (never for a stream that ended, nor one this replica's drain cut).
    """
    ended = False
    closed_here = False
    metrics.active_streams.inc()
    try:
        with shutdown.stream():
            for opening in framing.opening():
                yield opening
            async for sent in with_keepalive(events, ping_seconds, until=shutdown.streams_ended):
                if sent is None:
                    yield PING
                    continue
                ended = ended or isinstance(sent.event, RunEnded)
                for frame in await framing.frames(sent):
                    yield frame
            closed_here = True
            if not ended and unended is not None and not shutdown.draining:
                yield framing.unended(unended())
    finally:
        metrics.active_streams.dec()
        if not (ended or closed_here or shutdown.draining) and on_disconnect is not None:
            on_disconnect()


def sse_payload(event: StreamEvent) -> tuple[str, dict[str, Any]]:
    if isinstance(event, RunDelta):
        return "delta", {"text": event.text}
    if isinstance(event, RunRestarted):
        return "run.restarted", {"attempt": event.attempt}
    if isinstance(event, RunQueued):
        return "run.queued", {"thread_id": event.thread_id, "run_id": event.run_id}
    if isinstance(event, RunStarted):
        return "run.started", {
            "thread_id": event.thread_id,
            "run_id": event.run_id,
            "version": event.version,
            "messages": [Message.of(m).model_dump(mode="json") for m in event.messages],
        }
    message = Message.of(event.message).model_dump(mode="json") if event.message else None
    if event.status == "completed":
        return "run.completed", {
            "message": message,
            "usage": event.usage,
            "finish_reason": event.finish_reason,
            "model": event.model,
            "version": event.version,
        }
    if event.status == "cancelled":
        return "run.cancelled", {
            "message": message,
            "version": event.version,
            "cancelled_by": event.cancelled_by or "user",
        }
    error = event.error or {}
    code = error.get("code", "internal_error")
    return "run.failed", {
        "error": {
            "code": code,
            "message": error.get("message", "the run failed"),
            "retryable": bool(error.get("retryable", True)),
        },
        "partial_content": event.partial_content,
        "version": event.version,
    }
