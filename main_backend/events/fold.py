"""The pure fold of a thread's events into its state and messages.

The read models are this fold, stored; `rebuild` re-runs it over the log and
`verify` compares. Nothing here touches a database.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from main_backend.errors import InvalidEvent
from main_backend.events.types import (
    MESSAGE_ADDED,
    RUN_STARTED,
    RUN_TERMINAL_TYPES,
    THREAD_CREATED,
    THREAD_DELETED,
    THREAD_UPDATED,
    StoredEvent,
)


@dataclass(frozen=True, slots=True)
class ThreadState:
    thread_id: str
    owner: str
    title: str | None
    metadata: dict[str, Any]
    system_prompt: str | None
    forked_from: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime
    version: int
    message_count: int
    active_run_id: str | None
    deleted: bool

    @property
    def status(self) -> Literal["idle", "busy"]:
        return "busy" if self.active_run_id else "idle"


@dataclass(frozen=True, slots=True)
class MessageState:
    message_id: str
    thread_id: str
    version: int
    role: str
    content: str
    run_id: str | None
    partial: bool
    created_at: datetime


def message_from_event(event: StoredEvent) -> MessageState:
    data = event.data
    return MessageState(
        message_id=data["message_id"],
        thread_id=event.thread_id,
        version=event.version,
        role=data["role"],
        content=data["content"],
        run_id=data["run_id"],
        partial=bool(data["partial"]),
        created_at=event.recorded_at,
    )


def apply(state: ThreadState | None, event: StoredEvent) -> tuple[ThreadState, MessageState | None]:
    """The thread after `event`, and the message it added if any."""
    if event.type == THREAD_CREATED:
        if state is not None or event.version != 1:
            raise InvalidEvent(f"thread {event.thread_id} exists already")
        data = event.data
        return ThreadState(
            thread_id=event.thread_id,
            owner=data["owner"],
            title=data["title"],
            metadata=dict(data["metadata"]),
            system_prompt=data.get("system_prompt"),
            forked_from=data["forked_from"],
            created_at=event.recorded_at,
            updated_at=event.recorded_at,
            version=1,
            message_count=0,
            active_run_id=None,
            deleted=False,
        ), None
    if state is None:
        raise InvalidEvent(f"thread {event.thread_id} must start with {THREAD_CREATED}")
    if event.version != state.version + 1:
        raise InvalidEvent(
            f"event version {event.version} does not follow thread version {state.version}"
        )
    state = replace(state, version=event.version, updated_at=event.recorded_at)
    message = None
    if event.type == MESSAGE_ADDED:
        message = message_from_event(event)
        state = replace(state, message_count=state.message_count + 1)
    elif event.type == RUN_STARTED:
        state = replace(state, active_run_id=event.data["run_id"])
    elif event.type in RUN_TERMINAL_TYPES:
        if state.active_run_id == event.data["run_id"]:
            state = replace(state, active_run_id=None)
    elif event.type == THREAD_UPDATED:
        changes: dict[str, Any] = {}
        if "title" in event.data:
            changes["title"] = event.data["title"]
        if "metadata" in event.data:
            changes["metadata"] = dict(event.data["metadata"])
        state = replace(state, **changes)
    elif event.type == THREAD_DELETED:
        state = replace(state, deleted=True)
    return state, message


def fold(
    events: Iterable[StoredEvent], state: ThreadState | None = None
) -> tuple[ThreadState | None, list[MessageState]]:
    """Fold `events` (one thread's, in version order) onto `state`."""
    messages: list[MessageState] = []
    for event in events:
        state, message = apply(state, event)
        if message is not None:
            messages.append(message)
    return state, messages
