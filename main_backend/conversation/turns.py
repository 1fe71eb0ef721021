"""Planning a turn: which events a chat request appends, checked against the thread.

`plan_turn` decides; the turn graph's first node appends the plan atomically
with the version it was planned against, so a concurrent change turns into a
conflict instead of a wrong append.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from typing import Any

from main_backend.conversation.ids import input_event_id, input_message_id, run_started_id
from main_backend.errors import InvalidRequest, ThreadBusy, ThreadNotFound, VersionConflict
from main_backend.events.fold import ThreadState
from main_backend.events.store import EventStore
from main_backend.events.types import (
    MESSAGE_ADDED,
    RUN_STARTED,
    THREAD_CREATED,
    MessageRole,
    NewEvent,
    new_event,
)


@dataclass(frozen=True, slots=True)
class ChatMessage:
    role: MessageRole
    content: str


@dataclass(frozen=True, slots=True)
class ChatCommand:
    """Answer the newest user message of a thread (a new one if `thread_id` is None)."""

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


@dataclass(frozen=True, slots=True)
class TurnPlan:
    thread_id: str
    run_id: str
    expected_version: int
    events: list[NewEvent]
    model: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def prompt_version(self) -> int:
        """The version of the last input event: the prompt is the log up to it."""
        return self.expected_version + len(self.events) - 1


def new_run_id() -> str:
    return str(uuid.uuid4())


async def owned_thread(store: EventStore, thread_id: str, user: str) -> ThreadState:
    """The user's live thread; another user's or a deleted one is not found, alike."""
    thread = await store.get_thread(thread_id, owner=user)
    if thread is None:
        raise ThreadNotFound(thread_id)
    return thread


async def plan_turn(store: EventStore, command: ChatCommand, run_id: str) -> TurnPlan:
    metadata = {"request_id": command.request_id, "user": command.user}
    if command.thread_id is None:
        if not command.messages:
            raise InvalidRequest("a new thread needs at least one message", "messages")
        _require_user_last(command)
        thread_id = str(uuid.uuid4())
        expected_version = 0
        head = [
            new_event(
                THREAD_CREATED,
                {
                    "owner": command.user,
                    "title": None,
                    "metadata": command.metadata or {},
                    "forked_from": None,
                    "system_prompt": command.system_prompt,
                },
                metadata,
                input_event_id(run_id, 0),
            )
        ]
    else:
        thread = await owned_thread(store, command.thread_id, command.user)
        for name in ("system_prompt", "metadata"):
            if getattr(command, name) is not None:
                raise InvalidRequest(f"{name} can only be given for a new thread", name)
        if command.expected_version is not None and command.expected_version != thread.version:
            raise VersionConflict(thread.thread_id, command.expected_version, thread.version)
        if thread.active_run_id is not None:
            raise ThreadBusy(thread.thread_id, thread.active_run_id)
        if command.messages:
            _require_user_last(command)
        else:
            await _require_unanswered_question(store, thread)
        thread_id, expected_version, head = thread.thread_id, thread.version, []
    messages = [
        new_event(
            MESSAGE_ADDED,
            {
                "message_id": input_message_id(run_id, i),
                "role": m.role,
                "content": m.content,
                "run_id": None,
                "partial": False,
            },
            metadata,
            input_event_id(run_id, i + 1),
        )
        for i, m in enumerate(command.messages)
    ]
    params = {"temperature": command.temperature, "max_tokens": command.max_tokens}
    prompt_version = expected_version + len(head) + len(messages)
    started = new_event(
        RUN_STARTED,
        {
            "run_id": run_id,
            "model": command.model,
            "params": params,
            "prompt_version": prompt_version,
        },
        metadata,
        run_started_id(run_id),
    )
    return TurnPlan(
        thread_id, run_id, expected_version, [*head, *messages, started], command.model, params
    )


def _require_user_last(command: ChatCommand) -> None:
    if command.messages[-1].role != "user":
        raise InvalidRequest("the last message must be a user message", "messages")


async def _require_unanswered_question(store: EventStore, thread: ThreadState) -> None:
    async for message in store.iter_messages_backwards(thread.thread_id):
        if message.role == "user":
            return
        break
    raise InvalidRequest(
        "messages may be empty only to retry an unanswered user message", "messages"
    )
