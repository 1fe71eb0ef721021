"""Planning a turn: which events a chat request appends, checked against the thread.

`plan_turn` decides; the turn graph's first node appends the plan atomically
with the version it was planned against, so a concurrent change turns into a
conflict instead of a wrong append.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from main_backend.conversation.ids import (
    input_event_id,
    input_message_id,
    run_queued_id,
    run_started_id,
    terminal_event_id,
)
from main_backend.errors import (
    InvalidEvent,
    InvalidRequest,
    MessageNotFound,
    QueueFull,
    ThreadBusy,
    ThreadNotFound,
    VersionConflict,
)
from main_backend.events.fold import MessageState, ThreadState
from main_backend.events.store import EventStore
from main_backend.events.types import (
    MESSAGE_ADDED,
    RUN_CANCELLED,
    RUN_FAILED,
    RUN_QUEUED,
    RUN_STARTED,
    THREAD_CREATED,
    THREAD_UPDATED,
    CancelledBy,
    MessageRole,
    NewEvent,
    RunQueuedData,
    StoredEvent,
    new_event,
    read_data,
)
from main_backend.values import MAX_QUEUED_RUNS

# What a request does when its thread is busy (a run active or queued): refuse it
# (409 thread_busy), queue it behind the others, or queue it and stop the active run,
# keeping its partial answer (interrupt) or taking its input and answer out of the
# history (rollback).
IfBusy = Literal["reject", "enqueue", "interrupt", "rollback"]
STOPS_ACTIVE: dict[IfBusy, CancelledBy] = {"interrupt": "interrupt", "rollback": "rollback"}


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: MessageRole
    content: str


@dataclass(frozen=True, slots=True)
class Rebranch:
    """Answer again from an earlier point of the thread, in a new branch: `edit` a user
    message (the command's one message is its new text, a sibling of it) or
    `regenerate` an assistant message (a new answer to its question, a sibling of it)."""

    kind: Literal["edit", "regenerate"]
    message_id: str


# Where a run's input hangs: under the thread's active leaf (a new turn), or under an
# explicit message (a rebranch; None for a thread's first).
@dataclass(frozen=True, slots=True)
class Under:
    parent_id: str | None


@dataclass(frozen=True, slots=True)
class ChatCommand:
    """Answer the newest user message of a thread (a new one if `thread_id` is None),
    or, with `rebranch`, answer again from an earlier message."""

    user: str
    messages: list[ChatMessage]
    model: str
    temperature: float
    max_tokens: int | None
    thread_id: str | None = None
    system_prompt: str | None = None
    metadata: dict[str, Any] | None = None
    expected_version: int | None = None
    request_id: str | None = None
    if_busy: IfBusy = "reject"
    rebranch: Rebranch | None = None
    # Metadata the thread must hold once the run is accepted, merged into the thread's
    # in the run's own append (the LangGraph API marks the threads its graph runs on).
    thread_metadata: dict[str, Any] | None = None
    # A `thread_id` that names no thread creates it, with that id (in the run's append).
    create_thread: bool = False


@dataclass(frozen=True, slots=True)
class TurnPlan:
    thread_id: str
    run_id: str
    expected_version: int
    events: list[NewEvent]
    model: str
    params: dict[str, Any] = field(default_factory=dict)
    # The thread's own system prompt (fixed when the thread is created), as planned:
    # the run's prompt is built without reading the thread again.
    system_prompt: str | None = None

    @property
    def request_id(self) -> str | None:
        """The request that asked for the run (its events' metadata)."""
        request_id = self.events[-1].metadata.get("request_id")
        return request_id if isinstance(request_id, str) else None

    @property
    def parent_id(self) -> str | None:
        """The message the run answers (its `run.started` says)."""
        parent_id = self.events[-1].data.get("parent_id")
        return parent_id if isinstance(parent_id, str) else None

    @property
    def prompt_version(self) -> int:
        """The version of the last input event (`run.started` records it: the admin
        replay finds the run started at a version by it)."""
        return self.expected_version + len(self.events) - 1


@dataclass(frozen=True, slots=True)
class QueuePlan:
    """A run for a busy thread: its `run.queued` event, and the active run to stop
    first (with why) for `interrupt` and `rollback`."""

    thread_id: str
    run_id: str
    expected_version: int
    event: NewEvent
    stop_run_id: str | None = None
    stop_reason: CancelledBy | None = None
    # Appended before `event`, in the same append (`ChatCommand.thread_metadata`).
    head: list[NewEvent] = field(default_factory=list)


def new_run_id() -> str:
    return str(uuid.uuid4())


async def owned_thread(store: EventStore, thread_id: str, user: str) -> ThreadState:
    """The user's live thread; another user's or a deleted one is not found, alike."""
    thread = await store.get_thread(thread_id, owner=user)
    if thread is None:
        raise ThreadNotFound(thread_id)
    return thread


async def plan_turn(store: EventStore, command: ChatCommand, run_id: str) -> TurnPlan | QueuePlan:
    """The run's events if it can start now, else (its thread busy) its place in the
    queue, or why it can do neither."""
    metadata = {"request_id": command.request_id, "user": command.user}
    creates = command.create_thread and await store.get_thread(command.thread_id or "") is None
    if command.thread_id is None or creates:
        if not command.messages:
            raise InvalidRequest("a new thread needs at least one message", "messages")
        _require_user_last(command)
        thread_id = command.thread_id or str(uuid.uuid4())
        expected_version = 0
        head = [
            new_event(
                THREAD_CREATED,
                {
                    "owner": command.user,
                    "title": None,
                    "metadata": {**(command.metadata or {}), **(command.thread_metadata or {})},
                    "forked_from": None,
                    "system_prompt": command.system_prompt,
                },
                metadata,
                input_event_id(run_id, 0),
            )
        ]
        parent_id = None
        system_prompt = command.system_prompt
    else:
        thread = await owned_thread(store, command.thread_id, command.user)
        for name in ("system_prompt", "metadata"):
            if getattr(command, name) is not None:
                raise InvalidRequest(f"{name} can only be given for a new thread", name)
        if command.expected_version is not None and command.expected_version != thread.version:
            raise VersionConflict(thread.thread_id, command.expected_version, thread.version)
        under = await _rebranch_parent(store, thread, command.rebranch)
        head = _metadata_update(thread, command.thread_metadata, metadata)
        if thread.active_run_id is not None or thread.queued_run_ids:
            if command.if_busy == "reject":
                raise ThreadBusy(thread.thread_id, thread.active_run_id)
            return _queue_plan(thread, command, run_id, metadata, under, head)
        if command.messages:
            _require_user_last(command)
        elif under is None:
            await _require_unanswered_question(store, thread)
        thread_id, expected_version = thread.thread_id, thread.version
        parent_id = thread.head_id if under is None else under.parent_id
        system_prompt = thread.system_prompt
    params = {"temperature": command.temperature, "max_tokens": command.max_tokens}
    return _start_plan(
        thread_id,
        run_id,
        expected_version,
        head,
        command.messages,
        command.model,
        params,
        metadata,
        parent_id,
        system_prompt,
    )


async def _rebranch_parent(
    store: EventStore, thread: ThreadState, rebranch: Rebranch | None
) -> Under | None:
    """Where a rebranch's input hangs (None for a new turn), once its message is found
    and is of the role its kind needs."""
    if rebranch is None:
        return None
    message = await store.get_message(thread.thread_id, rebranch.message_id)
    if message is None or message.rolled_back:
        raise MessageNotFound(thread.thread_id, rebranch.message_id)
    if rebranch.kind == "edit":
        if message.role != "user":
            raise InvalidRequest(
                f"only a user message can be edited (this one's role is {message.role}); "
                "to answer again, regenerate the answer",
                "message_id",
            )
        return Under(message.parent_id)
    if message.role != "assistant" or message.parent_id is None:
        raise InvalidRequest(
            "only an assistant message that answers a message can be regenerated (this "
            f"one's role is {message.role}); to ask differently, edit the question",
            "message_id",
        )
    return Under(message.parent_id)


def plan_queued_start(thread: ThreadState, queued: StoredEvent) -> TurnPlan:
    """The events that start a queued run now that its thread is idle: its input,
    recorded only now so the history alternates question and answer, then `run.started`.
    Raises `InvalidEvent` when the stored `run.queued` cannot be read."""
    data = read_data(queued, RunQueuedData)
    messages = [_queued_message(m) for m in data["messages"]]
    return _start_plan(
        thread.thread_id,
        data["run_id"],
        thread.version,
        [],
        messages,
        data["model"],
        dict(data["params"]),
        dict(queued.metadata),
        data.get("parent_id", thread.head_id),
        thread.system_prompt,
    )


def queued_run_end(run_id: str, metadata: dict[str, Any], problem: str | None) -> NewEvent:
    """The end of a queued run that never started: cancelled, or failed with `problem`
    (its stored input cannot be read). Its only event besides its `run.queued`."""
    if problem is None:
        return new_event(
            RUN_CANCELLED,
            {"run_id": run_id, "cancelled_by": "user"},
            metadata,
            terminal_event_id(run_id),
        )
    return new_event(
        RUN_FAILED,
        {
            "run_id": run_id,
            "error": {"code": "internal_error", "message": problem},
            "partial_content": "",
        },
        metadata,
        terminal_event_id(run_id),
    )


def _queued_message(value: object) -> ChatMessage:
    if (
        not isinstance(value, dict)
        or value.get("role") not in ("user", "assistant", "system")
        or not isinstance(value.get("content"), str)
    ):
        raise InvalidEvent("a queued message is not a {role, content} object")
    return ChatMessage(value["role"], value["content"])


def _start_plan(
    thread_id: str,
    run_id: str,
    expected_version: int,
    head: list[NewEvent],
    inputs: list[ChatMessage],
    model: str,
    params: dict[str, Any],
    metadata: dict[str, Any],
    parent_id: str | None,
    system_prompt: str | None,
) -> TurnPlan:
    """`inputs` hang under `parent_id`, each under the one before; the run answers the
    last of them (`parent_id` itself when there are none: a regeneration)."""
    messages = []
    for i, m in enumerate(inputs):
        messages.append(
            new_event(
                MESSAGE_ADDED,
                {
                    "message_id": input_message_id(run_id, i),
                    "role": m.role,
                    "content": m.content,
                    "run_id": None,
                    "partial": False,
                    "parent_id": parent_id,
                },
                metadata,
                input_event_id(run_id, i + 1),
            )
        )
        parent_id = input_message_id(run_id, i)
    prompt_version = expected_version + len(head) + len(messages)
    started = new_event(
        RUN_STARTED,
        {
            "run_id": run_id,
            "model": model,
            "params": params,
            "prompt_version": prompt_version,
            "parent_id": parent_id,
        },
        metadata,
        run_started_id(run_id),
    )
    events = [*head, *messages, started]
    return TurnPlan(thread_id, run_id, expected_version, events, model, params, system_prompt)


def _metadata_update(
    thread: ThreadState, wanted: dict[str, Any] | None, metadata: dict[str, Any]
) -> list[NewEvent]:
    """The `thread.updated` that gives the thread `wanted`'s keys, if it lacks any."""
    if not wanted or all(thread.metadata.get(k) == v for k, v in wanted.items()):
        return []
    return [new_event(THREAD_UPDATED, {"metadata": {**thread.metadata, **wanted}}, metadata)]


def _queue_plan(
    thread: ThreadState,
    command: ChatCommand,
    run_id: str,
    metadata: dict[str, Any],
    under: Under | None,
    head: list[NewEvent],
) -> QueuePlan:
    if under is None:
        if not command.messages:
            raise InvalidRequest(
                "a message for a busy thread needs messages: only an idle thread retries "
                "its unanswered question",
                "messages",
            )
        _require_user_last(command)
    if len(thread.queued_run_ids) >= MAX_QUEUED_RUNS:
        raise QueueFull(thread.thread_id, MAX_QUEUED_RUNS)
    data: RunQueuedData = {
        "run_id": run_id,
        "model": command.model,
        "params": {"temperature": command.temperature, "max_tokens": command.max_tokens},
        "messages": [{"role": m.role, "content": m.content} for m in command.messages],
    }
    if under is not None:
        data["parent_id"] = under.parent_id
    event = new_event(RUN_QUEUED, data, metadata, run_queued_id(run_id))
    reason = STOPS_ACTIVE.get(command.if_busy)
    return QueuePlan(
        thread.thread_id,
        run_id,
        thread.version,
        event,
        thread.active_run_id if reason is not None else None,
        reason,
        head,
    )


def _require_user_last(command: ChatCommand) -> None:
    if command.messages[-1].role != "user":
        raise InvalidRequest("the last message must be a user message", "messages")


async def _require_unanswered_question(store: EventStore, thread: ThreadState) -> None:
    leaf: MessageState | None = None
    if thread.head_id is not None:
        leaf = await store.get_message(thread.thread_id, thread.head_id)
    if leaf is not None and leaf.role == "user":
        return
    raise InvalidRequest(
        "messages may be empty only to retry an unanswered user message", "messages"
    )
