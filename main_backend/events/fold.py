"""The pure fold of a thread's events into its state and messages.

The read models are this fold, stored; `rebuild` re-runs it over the log and
`verify` compares. Nothing here touches a database.

The log cannot be rewritten, so the fold reads what it holds defensively: an event that
does not hold what its type needs (written around `check_new_events`) is skipped with a
warning; the thread's version still moves past it, so everything after it still folds.
Only a thread's start or its version order being broken stops its fold (`InvalidEvent`).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Literal

from loguru import logger

from main_backend.errors import InvalidEvent
from main_backend.events.types import (
    MESSAGE_ADDED,
    RUN_STARTED,
    RUN_TERMINAL_TYPES,
    THREAD_CREATED,
    THREAD_DELETED,
    THREAD_UPDATED,
    MessageAddedData,
    MessageRole,
    RunStartedData,
    StoredEvent,
    ThreadCreatedData,
    ThreadUpdatedData,
    read_data,
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
    role: MessageRole
    content: str
    run_id: str | None
    partial: bool
    created_at: datetime


def message_from_event(event: StoredEvent) -> MessageState:
    data = read_data(event, MessageAddedData)
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
        data = read_data(event, ThreadCreatedData)
        return ThreadState(
            thread_id=event.thread_id,
            owner=data["owner"],
            title=data["title"],
            metadata=dict(data["metadata"]),
            system_prompt=data.get("system_prompt"),
            forked_from=dict(data["forked_from"]) if data["forked_from"] is not None else None,
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
    try:
        return _applied(state, event)
    except InvalidEvent as exc:
        logger.warning("the fold skips an event it cannot read: {}", exc)
        return state, None


def readable_message(event: StoredEvent) -> MessageState | None:
    """The message a `message.added` event holds, or None (logged) when it holds none."""
    try:
        return message_from_event(event)
    except InvalidEvent as exc:
        logger.warning("skipping a message that cannot be read: {}", exc)
        return None


def _applied(state: ThreadState, event: StoredEvent) -> tuple[ThreadState, MessageState | None]:
    message = None
    if event.type == MESSAGE_ADDED:
        message = message_from_event(event)
        state = replace(state, message_count=state.message_count + 1)
    elif event.type == RUN_STARTED:
        # Only what the fold reads is checked: a run that cannot be driven is still active.
        state = replace(state, active_run_id=read_data(event, RunStartedData, "run_id")["run_id"])
    elif event.type in RUN_TERMINAL_TYPES:
        if state.active_run_id == event.data.get("run_id"):
            state = replace(state, active_run_id=None)
    elif event.type == THREAD_UPDATED:
        changes = read_data(event, ThreadUpdatedData)
        if "title" in changes:
            state = replace(state, title=changes["title"])
        if "metadata" in changes:
            state = replace(state, metadata=dict(changes["metadata"]))
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
