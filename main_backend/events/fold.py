"""The pure fold of a thread's events into its state and messages.

The read models are this fold, stored; `rebuild` re-runs it over the log and
`verify` compares. Nothing here touches a database.

The log cannot be rewritten, so the fold reads what it holds defensively: an event that
does not hold what its type needs (written around `check_new_events`) is skipped with a
warning; the thread's version still moves past it, so everything after it still folds.
Only a thread's start or its version order being broken stops its fold (`InvalidEvent`).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import Any, Literal

from loguru import logger

from main_backend.errors import InvalidEvent
from main_backend.events.types import (
    FIELD_CHECKS,
    MAX_ID_LENGTH,
    MESSAGE_ADDED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_QUEUED,
    RUN_ROLLED_BACK,
    RUN_STARTED,
    RUN_TERMINAL_TYPES,
    THREAD_CREATED,
    THREAD_DELETED,
    THREAD_HEAD_MOVED,
    THREAD_UPDATED,
    CancelledBy,
    MessageAddedData,
    MessageRole,
    RunQueuedData,
    RunRolledBackData,
    RunStartedData,
    StoredEvent,
    ThreadCreatedData,
    ThreadHeadMovedData,
    ThreadUpdatedData,
    read_cancelled_by,
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
    # Runs accepted while the thread was busy (`run.queued`), oldest first: each starts
    # in turn once no run is active.
    queued_run_ids: list[str] = field(default_factory=list)
    # The active leaf: the active path is it and its ancestors (docs/design.md, trees).
    head_id: str | None = None

    @property
    def status(self) -> Literal["idle", "busy"]:
        return "busy" if self.active_run_id or self.queued_run_ids else "idle"


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
    # Taken out of the history (and every later prompt) by a `run.rolled_back`.
    rolled_back: bool = False
    # The message it follows (None for a first message): threads are trees.
    parent_id: str | None = None
    # On the thread's active path (root → active leaf).
    active: bool = False


def message_from_event(event: StoredEvent, head_id: str | None = None) -> MessageState:
    """The message a `message.added` holds; one written before threads were trees (no
    `parent_id`) hangs under `head_id`, the thread's active leaf when it was added."""
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
        parent_id=data.get("parent_id", head_id),
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


def _without(state: ThreadState, run_id: object) -> list[str]:
    return [r for r in state.queued_run_ids if r != run_id]


def readable_message(event: StoredEvent, head_id: str | None = None) -> MessageState | None:
    """The message a `message.added` event holds, or None (logged) when it holds none."""
    try:
        return message_from_event(event, head_id)
    except InvalidEvent as exc:
        logger.warning("skipping a message that cannot be read: {}", exc)
        return None


def _applied(state: ThreadState, event: StoredEvent) -> tuple[ThreadState, MessageState | None]:
    message = None
    if event.type == MESSAGE_ADDED:
        message = message_from_event(event, state.head_id)
        state = replace(state, message_count=state.message_count + 1, head_id=message.message_id)
    elif event.type == THREAD_HEAD_MOVED:
        state = replace(state, head_id=read_data(event, ThreadHeadMovedData)["message_id"])
    elif event.type == RUN_STARTED:
        # Only what the fold reads is checked: a run that cannot be driven is still active.
        run_id = read_data(event, RunStartedData, "run_id")["run_id"]
        state = replace(state, active_run_id=run_id, queued_run_ids=_without(state, run_id))
    elif event.type in RUN_TERMINAL_TYPES:
        ended = event.data.get("run_id")
        if state.active_run_id == ended:
            state = replace(state, active_run_id=None)
        # A queued run may end before it starts (cancelled, or its input unreadable).
        state = replace(state, queued_run_ids=_without(state, ended))
    elif event.type == RUN_QUEUED:
        run_id = read_data(event, RunQueuedData, "run_id")["run_id"]
        if run_id not in state.queued_run_ids:
            state = replace(state, queued_run_ids=[*state.queued_run_ids, run_id])
    elif event.type == RUN_ROLLED_BACK:
        gone = len(rolled_back_ids(event))
        state = replace(state, message_count=max(0, state.message_count - gone))
    elif event.type == THREAD_UPDATED:
        changes = read_data(event, ThreadUpdatedData)
        if "title" in changes:
            state = replace(state, title=changes["title"])
        if "metadata" in changes:
            state = replace(state, metadata=dict(changes["metadata"]))
    elif event.type == THREAD_DELETED:
        state = replace(state, deleted=True)
    return state, message


def rolled_back_ids(event: StoredEvent) -> list[str]:
    """The messages a `run.rolled_back` takes out of the history (none for any other
    event, or one that cannot be read: logged)."""
    if event.type != RUN_ROLLED_BACK:
        return []
    try:
        ids = read_data(event, RunRolledBackData)["message_ids"]
    except InvalidEvent as exc:
        logger.warning("the fold skips a rollback it cannot read: {}", exc)
        return []
    return list(dict.fromkeys(i for i in ids if isinstance(i, str)))


def fold(
    events: Iterable[StoredEvent], state: ThreadState | None = None
) -> tuple[ThreadState | None, list[MessageState]]:
    """Fold `events` (one thread's, in version order) onto `state`: the thread, and the
    messages the events add (marked `rolled_back` when a later one of them says so, and
    `active` when on the path from the thread's active leaf, as far as they reach)."""
    messages: list[MessageState] = []
    for event in events:
        state, message = apply(state, event)
        if message is not None:
            messages.append(message)
        if gone := set(rolled_back_ids(event)):
            messages = [
                replace(m, rolled_back=True) if m.message_id in gone else m for m in messages
            ]
            if state.head_id in gone:
                # Before trees no `thread.head_moved` followed a rollback: the leaf returns
                # to the message before the rolled-back run, under which the upcaster hangs
                # what comes next. (Today's rollback moves the leaf itself, at once.)
                state = replace(state, head_id=_kept_ancestor(messages, state.head_id, gone))
    if state is None:
        return state, messages
    on_path = set(path_ids(messages, state.head_id))
    return state, [replace(m, active=m.message_id in on_path) for m in messages]


def _kept_ancestor(messages: list[MessageState], leaf_id: str | None, gone: set[str]) -> str | None:
    """The nearest of `leaf_id` and its ancestors that is not in `gone`, as far as
    `messages` hold them."""
    by_id = {m.message_id: m for m in messages}
    current: str | None = leaf_id
    seen: set[str] = set()
    while current in gone and current in by_id and current not in seen:
        seen.add(current)
        current = by_id[current].parent_id
    return current


def path_ids(messages: Iterable[MessageState], leaf_id: str | None) -> list[str]:
    """The ids from `leaf_id` up through its parents, leaf first, as far as `messages`
    hold them (a cycle, which only a hand-written log could hold, ends the walk)."""
    by_id = {m.message_id: m for m in messages}
    path: list[str] = []
    seen: set[str] = set()
    current = leaf_id
    while current is not None and current in by_id and current not in seen:
        seen.add(current)
        path.append(current)
        current = by_id[current].parent_id
    return path


def active_path(messages: Iterable[MessageState], leaf_id: str | None) -> list[MessageState]:
    """The path root → `leaf_id` among `messages` (oldest first)."""
    listed = list(messages)
    by_id = {m.message_id: m for m in listed}
    return [by_id[i] for i in reversed(path_ids(listed, leaf_id))]


def children(messages: Iterable[MessageState]) -> dict[str | None, list[str]]:
    """Each parent's children ids (None: the first messages), oldest first: a message's
    siblings, itself included, are its parent's children. Rolled-back messages are out
    of the tree."""
    found: dict[str | None, list[str]] = {}
    for m in sorted(messages, key=lambda m: m.version):
        if not m.rolled_back:
            found.setdefault(m.parent_id, []).append(m.message_id)
    return found


# A run's status: "pending" from its `run.queued` (its input not in the history yet) to
# its `run.started`.
RunStatus = Literal["pending", "running", "completed", "failed", "cancelled"]


@dataclass(frozen=True, slots=True)
class RunState:
    """One run, as its `run.started` and terminal events tell it (no texts: kept small)."""

    thread_id: str
    run_id: str
    status: RunStatus
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    # The model asked for, then the one the agent reports it used (when it reported one).
    model: str | None
    usage: dict[str, Any] | None
    error: dict[str, str] | None
    # The answer's message (completed and cancelled runs).
    message_id: str | None
    cancelled_by: CancelledBy | None


def _valid(event: StoredEvent, name: str) -> Any:
    """The field `name` of a stored event if it holds what the catalogue says, else None."""
    value = event.data.get(name)
    check = FIELD_CHECKS[event.type].get(name)
    return value if check is not None and name in event.data and check(value) else None


def _valid_id(event: StoredEvent, name: str) -> str | None:
    # Bounded as the append bounds ids: one odd event must not break a rebuild.
    value = _valid(event, name)
    return value if isinstance(value, str) and 0 < len(value) <= MAX_ID_LENGTH else None


def _run_error(event: StoredEvent) -> dict[str, str]:
    # The same defaults the chat routes use for an error a run.failed does not spell out.
    error = _valid(event, "error") or {}
    code, message = error.get("code"), error.get("message")
    return {
        "code": code if isinstance(code, str) else "internal_error",
        "message": message if isinstance(message, str) else "the run failed",
    }


def apply_run(run: RunState | None, event: StoredEvent) -> RunState | None:
    """The run after `event` (one that names it), or None when the event leaves no run:
    an end of a run that never started, a second start or a second end is skipped."""
    if event.type in (RUN_QUEUED, RUN_STARTED):
        status: RunStatus = "pending" if event.type == RUN_QUEUED else "running"
        if run is not None:
            if run.status == "pending" and status == "running":
                return replace(run, status="running", started_at=event.recorded_at)
            logger.warning("the runs' fold skips a second start of run {}", run.run_id)
            return run
        return RunState(
            thread_id=event.thread_id,
            run_id=event.data["run_id"],
            status=status,
            created_at=event.recorded_at,
            started_at=event.recorded_at if status == "running" else None,
            ended_at=None,
            model=_valid(event, "model"),
            usage=None,
            error=None,
            message_id=None,
            cancelled_by=None,
        )
    if run is None:
        logger.warning(
            "the runs' fold skips event {}: the end of a run that never started", event.event_id
        )
        return None
    if run.status not in ("pending", "running"):
        logger.warning("the runs' fold skips a second end of run {}", run.run_id)
        return run
    ended = replace(run, ended_at=event.recorded_at, model=_valid(event, "model") or run.model)
    if event.type == RUN_COMPLETED:
        return replace(
            ended,
            status="completed",
            usage=_valid(event, "usage"),
            message_id=_valid_id(event, "message_id"),
        )
    if event.type == RUN_FAILED:
        return replace(ended, status="failed", error=_run_error(event))
    # Every cancel was the user's before the field was written.
    return replace(
        ended,
        status="cancelled",
        message_id=_valid_id(event, "message_id"),
        cancelled_by=read_cancelled_by(event.data.get("cancelled_by")),
    )


RUN_TYPES = frozenset({RUN_QUEUED, RUN_STARTED, *RUN_TERMINAL_TYPES})


def run_id_of(event: StoredEvent) -> str | None:
    """The run an event is about, if it is a run's event naming one."""
    return _valid_id(event, "run_id") if event.type in RUN_TYPES else None


def fold_runs(
    events: Iterable[StoredEvent], runs: Mapping[str, RunState] | None = None
) -> dict[str, RunState]:
    """The runs that `events` (one thread's, in version order) start or end, by id, folded
    onto the thread's `runs` known so far (only those the events name are needed)."""
    known = dict(runs or {})
    changed: dict[str, RunState] = {}
    for event in events:
        run_id = run_id_of(event)
        if run_id is None:
            continue
        run = apply_run(known.get(run_id), event)
        if run is not None and run is not known.get(run_id):
            known[run_id] = changed[run_id] = run
    return changed
