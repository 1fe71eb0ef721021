"""The event catalogue (DESIGN.md) and the two shapes an event takes: new and stored."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from main_backend.errors import InvalidEvent
from main_backend.values import (
    EVENT_MAX_DEPTH,
    METADATA_MAX_BYTES,
    METADATA_MAX_DEPTH,
    ValueProblem,
    check_json,
)
from stubichat_common.text import text_problem

THREAD_CREATED = "thread.created"
MESSAGE_ADDED = "message.added"
RUN_STARTED = "run.started"
RUN_COMPLETED = "run.completed"
RUN_FAILED = "run.failed"
RUN_CANCELLED = "run.cancelled"
THREAD_UPDATED = "thread.updated"
THREAD_DELETED = "thread.deleted"

# The fields each type's data must carry (more may be present).
REQUIRED_FIELDS: dict[str, frozenset[str]] = {
    THREAD_CREATED: frozenset({"owner", "title", "metadata", "forked_from"}),
    MESSAGE_ADDED: frozenset({"message_id", "role", "content", "run_id", "partial"}),
    RUN_STARTED: frozenset({"run_id", "model", "params", "prompt_version"}),
    RUN_COMPLETED: frozenset(
        {"run_id", "message_id", "finish_reason", "usage", "latency_ms", "ttft_ms"}
    ),
    RUN_FAILED: frozenset({"run_id", "error", "partial_content"}),
    RUN_CANCELLED: frozenset({"run_id", "message_id"}),
    THREAD_UPDATED: frozenset(),
    THREAD_DELETED: frozenset(),
}
# The types some of those fields must have: what the fold reads them as.
FIELD_TYPES: dict[str, dict[str, type | tuple[type, ...]]] = {
    THREAD_CREATED: {
        "owner": str,
        "title": (str, type(None)),
        "metadata": dict,
        "forked_from": (dict, type(None)),
        "system_prompt": (str, type(None)),
    },
    MESSAGE_ADDED: {
        "message_id": str,
        "role": str,
        "content": str,
        "run_id": (str, type(None)),
        "partial": bool,
    },
    RUN_STARTED: {"run_id": str, "model": str, "params": dict, "prompt_version": int},
    THREAD_UPDATED: {"title": (str, type(None)), "metadata": dict},
}
RUN_TERMINAL_TYPES = frozenset({RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED})
MESSAGE_ROLES = frozenset({"user", "assistant", "system"})


def new_id() -> str:
    return str(uuid.uuid4())


@dataclass(frozen=True, slots=True)
class NewEvent:
    """An event about to be appended; the store gives it a version and a position."""

    type: str
    data: dict[str, Any]
    metadata: dict[str, Any] = field(default_factory=dict)
    event_id: str = field(default_factory=new_id)


@dataclass(frozen=True, slots=True)
class StoredEvent:
    position: int
    event_id: str
    thread_id: str
    version: int
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: datetime


MAX_ID_LENGTH = 64


def check_new_events(thread_id: str, events: list[NewEvent], expected_version: int) -> None:
    """Refuse what must never be stored, before any database work."""
    if not events:
        raise InvalidEvent("an append needs at least one event")
    if expected_version < 0:
        raise InvalidEvent("expected_version must not be negative")
    _check_id("thread_id", thread_id)
    seen: set[str] = set()
    for event in events:
        _check_id("event_id", event.event_id)
        if event.event_id in seen:
            raise InvalidEvent(f"event id {event.event_id} appears twice in one append")
        seen.add(event.event_id)
        required = REQUIRED_FIELDS.get(event.type)
        if required is None:
            raise InvalidEvent(f"unknown event type {event.type!r}")
        missing = required - event.data.keys()
        if missing:
            raise InvalidEvent(f"{event.type} needs {', '.join(sorted(missing))}")
        for name, expected in FIELD_TYPES.get(event.type, {}).items():
            if name in event.data and not isinstance(event.data[name], expected):
                raise InvalidEvent(f"{event.type} {name} has the wrong type", name)
        if event.type == MESSAGE_ADDED and event.data["role"] not in MESSAGE_ROLES:
            raise InvalidEvent(f"unknown message role {event.data['role']!r}")
        _check_json(event.type, event.data, event.metadata)


def _check_json(type_: str, data: dict[str, Any], metadata: dict[str, Any]) -> None:
    """Every string a valid Unicode text without NUL, bounded nesting, metadata objects
    within their limits, and JSON that round-trips: what every read can serve."""
    try:
        if isinstance(data.get("metadata"), dict):
            check_json(
                data["metadata"],
                ["metadata"],
                max_depth=METADATA_MAX_DEPTH,
                max_bytes=METADATA_MAX_BYTES,
            )
        check_json(data, [], max_depth=EVENT_MAX_DEPTH)
        check_json(metadata, ["event_metadata"], max_depth=EVENT_MAX_DEPTH)
    except ValueProblem as exc:
        raise InvalidEvent(
            f"{type_}: {exc.field or 'data'} {exc.message}", exc.field or None
        ) from exc
    try:
        json.dumps([data, metadata], allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise InvalidEvent(f"{type_} is not storable as JSON: {exc}") from exc


def _check_id(name: str, value: object) -> None:
    if not isinstance(value, str) or not value or len(value) > MAX_ID_LENGTH:
        raise InvalidEvent(f"{name} must be a non-empty string of at most {MAX_ID_LENGTH} chars")
    problem = text_problem(value)
    if problem is not None:
        raise InvalidEvent(f"{name} {problem}", name)
