"""The event catalogue (docs/design.md) and the two shapes an event takes: new and stored."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from types import UnionType
from typing import (
    Any,
    Final,
    Literal,
    NotRequired,
    TypedDict,
    TypeVar,
    Union,
    cast,
    get_args,
    get_origin,
    get_type_hints,
    is_typeddict,
    overload,
)

from main_backend.errors import InvalidEvent
from main_backend.values import (
    EVENT_MAX_DEPTH,
    METADATA_MAX_BYTES,
    METADATA_MAX_DEPTH,
    ValueProblem,
    check_json,
)
from stubichat_common.text import text_problem

THREAD_CREATED: Final = "thread.created"
MESSAGE_ADDED: Final = "message.added"
RUN_STARTED: Final = "run.started"
RUN_COMPLETED: Final = "run.completed"
RUN_FAILED: Final = "run.failed"
RUN_CANCELLED: Final = "run.cancelled"
RUN_QUEUED: Final = "run.queued"
RUN_ROLLED_BACK: Final = "run.rolled_back"
THREAD_UPDATED: Final = "thread.updated"
THREAD_DELETED: Final = "thread.deleted"
THREAD_HEAD_MOVED: Final = "thread.head_moved"

MessageRole = Literal["user", "assistant", "system"]


# The payload (`data`) of each event type: the catalogue. Code builds events through
# `new_event`, so mypy holds each payload to its type; the append checks every new event
# against it at run time (`check_new_events`), and readers check stored data before they
# believe it (`read_data`): a stored payload is untrusted JSON. A field that not every
# writer gives (old events included) is NotRequired; none may be renamed or dropped, as
# the log keeps every event ever written.
class ForkedFrom(TypedDict):
    thread_id: str
    version: int


class ThreadCreatedData(TypedDict):
    owner: str
    title: str | None
    metadata: dict[str, Any]
    forked_from: ForkedFrom | None
    system_prompt: NotRequired[str | None]


class MessageAddedData(TypedDict):
    message_id: str
    role: MessageRole
    content: str
    # The run that wrote it: None for the user's input and for copies into a fork.
    run_id: str | None
    # True for an answer cut short (failed or cancelled run).
    partial: bool
    # The message it answers or follows (None for a thread's first). Absent in events
    # written before threads were trees: the fold reads those as hanging under the
    # thread's active leaf, a linear history. A new message becomes the active leaf.
    parent_id: NotRequired[str | None]


class RunStartedData(TypedDict):
    run_id: str
    model: str
    # As given to the LLM agent: temperature, max_tokens.
    params: dict[str, Any]
    # The thread version the prompt ends at: the input recorded with this event.
    prompt_version: int
    # The message the prompt ends at and the answer hangs under: the last input, or for a
    # regeneration the question answered again. Absent before threads were trees: then
    # the thread's active leaf at `prompt_version`.
    parent_id: NotRequired[str | None]


class QueuedMessage(TypedDict):
    role: MessageRole
    content: str


class RunQueuedData(TypedDict):
    """A run accepted while its thread was busy (`if_busy`): its input waits here, out of
    the history, until the run starts (its `message.added` events and `run.started`)."""

    run_id: str
    model: str
    params: dict[str, Any]
    messages: list[QueuedMessage]
    # Where the input hangs when the run starts: absent, under the active leaf of then (a
    # new turn); present, under that message (an edit: the edited one's parent, None for
    # a first message; a regeneration, with no messages: the question answered again).
    parent_id: NotRequired[str | None]


class RunCompletedData(TypedDict):
    run_id: str
    message_id: str
    finish_reason: str | None
    usage: dict[str, Any] | None
    latency_ms: float
    ttft_ms: float | None
    # The model the agent reports it used.
    model: NotRequired[str]


class RunError(TypedDict):
    code: str
    message: str


class RunFailedData(TypedDict):
    run_id: str
    error: RunError
    partial_content: str
    model: NotRequired[str]


# Who cancelled a run: its user (a cancel request, or a streaming client that went away
# with `on_disconnect: cancel`), a newer request with `if_busy` interrupt or rollback.
# "shutdown" is reserved: a replica that stops hands its runs over instead.
CancelledBy = Literal["user", "interrupt", "rollback", "shutdown"]


def read_cancelled_by(value: object) -> CancelledBy:
    """Who cancelled, from a stored value: absent or unknown ones (events and leases
    written before the field existed, or by hand) read as the user's."""
    return cast(CancelledBy, value) if value in get_args(CancelledBy) else "user"


class RunCancelledData(TypedDict):
    run_id: str
    # The partial answer's message; absent for a queued run cancelled before it started.
    message_id: NotRequired[str]
    model: NotRequired[str]
    # Absent in events written before it existed: those were all the user's.
    cancelled_by: NotRequired[CancelledBy]


class RunRolledBackData(TypedDict):
    """The run's input and partial answer leave the history and every later prompt (the
    log keeps them): appended right after the run's `run.cancelled` (`if_busy: rollback`)."""

    run_id: str
    message_ids: list[str]


class ThreadUpdatedData(TypedDict):
    # What changed: either or both.
    title: NotRequired[str | None]
    metadata: NotRequired[dict[str, Any]]


class ThreadDeletedData(TypedDict):
    pass


class ThreadHeadMovedData(TypedDict):
    """The thread's active leaf moves (a checkout; a rollback returning to where the
    rolled-back run started): the active path is this message and its ancestors (none
    when None). A `message.added` moves it too, to the new message, without this event."""

    message_id: str | None


EventData = (
    ThreadCreatedData
    | MessageAddedData
    | RunStartedData
    | RunCompletedData
    | RunFailedData
    | RunCancelledData
    | RunQueuedData
    | RunRolledBackData
    | ThreadUpdatedData
    | ThreadDeletedData
    | ThreadHeadMovedData
)

# The catalogue: every event type and the type of its payload.
PAYLOAD_TYPES: dict[str, type] = {
    THREAD_CREATED: ThreadCreatedData,
    MESSAGE_ADDED: MessageAddedData,
    RUN_STARTED: RunStartedData,
    RUN_COMPLETED: RunCompletedData,
    RUN_FAILED: RunFailedData,
    RUN_CANCELLED: RunCancelledData,
    RUN_QUEUED: RunQueuedData,
    RUN_ROLLED_BACK: RunRolledBackData,
    THREAD_UPDATED: ThreadUpdatedData,
    THREAD_DELETED: ThreadDeletedData,
    THREAD_HEAD_MOVED: ThreadHeadMovedData,
}


Check = Callable[[object], bool]


def _check_for(annotation: object) -> Check:
    """What a field's value must be, as far as its annotation says at its top level: the
    Literal values, None, str, bool, int, float (an int will do), a dict for a dict or a
    TypedDict and a list for a list (whose items are not looked into), anything for Any."""
    origin = get_origin(annotation)
    if annotation is Any:
        return lambda value: True
    if origin is NotRequired:
        return _check_for(get_args(annotation)[0])
    if origin in (Union, UnionType):
        checks = [_check_for(arg) for arg in get_args(annotation)]
        return lambda value: any(check(value) for check in checks)
    if origin is Literal:
        # By type too: True == 1, but True is not the Literal 1.
        allowed = {(type(v), v) for v in get_args(annotation)}
        return lambda value: (type(value), value) in allowed
    if annotation is None or annotation is type(None):
        return lambda value: value is None
    # JSON has no bool among its numbers, though Python's bool is an int.
    if annotation is float:
        return lambda value: isinstance(value, int | float) and not isinstance(value, bool)
    if annotation is int:
        return lambda value: isinstance(value, int) and not isinstance(value, bool)
    if is_typeddict(annotation) or origin is dict:
        return lambda value: isinstance(value, dict)
    if origin is list:
        return lambda value: isinstance(value, list)
    assert isinstance(annotation, type), annotation
    runtime_type = annotation
    return lambda value: isinstance(value, runtime_type)


# The fields each type's data must carry (more may be present), and what each of its
# fields must hold (`_check_for`): what the append requires and the fold reads. Both
# follow the payload types. (Read from the annotations: `__required_keys__` misses
# NotRequired in string ones.)
REQUIRED_FIELDS: dict[str, frozenset[str]] = {
    type_: frozenset(
        name
        for name, annotation in get_type_hints(payload, include_extras=True).items()
        if get_origin(annotation) is not NotRequired
    )
    for type_, payload in PAYLOAD_TYPES.items()
}
FIELD_CHECKS: dict[str, dict[str, Check]] = {
    type_: {name: _check_for(annotation) for name, annotation in get_type_hints(payload).items()}
    for type_, payload in PAYLOAD_TYPES.items()
}
RUN_TERMINAL_TYPES = frozenset({RUN_COMPLETED, RUN_FAILED, RUN_CANCELLED})


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
    """An event as the log holds it: `data` is whatever was stored (see `read_data`)."""

    position: int
    event_id: str
    thread_id: str
    version: int
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: datetime


@overload
def new_event(
    type_: Literal["thread.created"],
    data: ThreadCreatedData,
    metadata: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> NewEvent: ...
@overload
def new_event(
    type_: Literal["message.added"],
    data: MessageAddedData,
    metadata: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> NewEvent: ...
@overload
def new_event(
    type_: Literal["run.started"],
    data: RunStartedData,
    metadata: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> NewEvent: ...
@overload
def new_event(
    type_: Literal["run.completed"],
    data: RunCompletedData,
    metadata: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> NewEvent: ...
@overload
def new_event(
    type_: Literal["run.failed"],
    data: RunFailedData,
    metadata: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> NewEvent: ...
@overload
def new_event(
    type_: Literal["run.cancelled"],
    data: RunCancelledData,
    metadata: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> NewEvent: ...
@overload
def new_event(
    type_: Literal["run.queued"],
    data: RunQueuedData,
    metadata: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> NewEvent: ...
@overload
def new_event(
    type_: Literal["run.rolled_back"],
    data: RunRolledBackData,
    metadata: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> NewEvent: ...
@overload
def new_event(
    type_: Literal["thread.updated"],
    data: ThreadUpdatedData,
    metadata: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> NewEvent: ...
@overload
def new_event(
    type_: Literal["thread.deleted"],
    data: ThreadDeletedData,
    metadata: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> NewEvent: ...
@overload
def new_event(
    type_: Literal["thread.head_moved"],
    data: ThreadHeadMovedData,
    metadata: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> NewEvent: ...
def new_event(
    type_: str,
    data: EventData,
    metadata: dict[str, Any] | None = None,
    event_id: str | None = None,
) -> NewEvent:
    """A catalogue event, its payload checked against its type's (statically: the
    store checks every event it appends, however built)."""
    return NewEvent(type_, dict(data), metadata or {}, event_id or new_id())


Payload = TypeVar("Payload")


def read_data(event: StoredEvent, payload: type[Payload], *names: str) -> Payload:
    """A stored event's data as the catalogue types it, once the fields `names` hold what
    `FIELD_CHECKS` says (by default every field it must carry and every other it has).

    Stored data is untrusted (it may have been written around `check_new_events`), so
    this checks before the static type is believed; `InvalidEvent` says what is wrong."""
    if PAYLOAD_TYPES.get(event.type) is not payload:
        raise InvalidEvent(f"event {event.event_id} is a {event.type}, not a {payload.__name__}")
    data = event.data
    checks = FIELD_CHECKS[event.type]
    required = REQUIRED_FIELDS[event.type]
    for name in names or [n for n in checks if n in required or n in data]:
        if name not in data or not checks[name](data[name]):
            raise InvalidEvent(
                f"event {event.event_id} ({event.type}, position "
                f"{event.position}) has no valid {name}"
            )
    return cast(Payload, data)


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
        for name, check in FIELD_CHECKS[event.type].items():
            if name in event.data and not check(event.data[name]):
                raise InvalidEvent(
                    f"{event.type} {name} is not of the type the catalogue gives it", name
                )
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
