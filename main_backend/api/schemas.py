"""Request and response bodies of the main backend's HTTP API (docs/api.md)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field
from pydantic_core import PydanticCustomError

from main_backend.events.fold import MessageState, RunState, ThreadState
from main_backend.events.types import StoredEvent
from main_backend.values import (
    MAX_INTEGER,
    MAX_VERSION,
    METADATA_MAX_BYTES,
    METADATA_MAX_DEPTH,
    ValueProblem,
    check_json,
    check_text,
)

Role = Literal["user", "assistant", "system"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)


def _refused(problem: ValueProblem) -> PydanticCustomError:
    # `path` goes on the field's location in the error's `details[].field` (metadata.k).
    return PydanticCustomError(
        "invalid_value", "{reason}", {"reason": problem.message, "path": problem.path}
    )


def _text(value: str) -> str:
    try:
        return check_text(value, [])
    except ValueProblem as exc:
        raise _refused(exc) from None


def _not_blank(value: str) -> str:
    if not value.strip():
        raise PydanticCustomError("blank", "must not be only whitespace")
    return value


def _metadata(value: dict[str, Any]) -> dict[str, Any]:
    try:
        check_json(value, [], max_depth=METADATA_MAX_DEPTH, max_bytes=METADATA_MAX_BYTES)
    except ValueProblem as exc:
        raise _refused(exc) from None
    return value


# Every string and JSON value a request can store goes through one of these (values.py
# holds the limits); the event store checks the same again before any append.
Text = Annotated[str, AfterValidator(_text)]
Content = Annotated[str, AfterValidator(_text), AfterValidator(_not_blank)]
Metadata = Annotated[dict[str, Any], AfterValidator(_metadata)]


class MessageIn(_Strict):
    role: Role
    content: Content = Field(min_length=1)


class _Answering(_Strict):
    """What a request that starts a run says of the answer and of the run (as /chat/)."""

    model: Text | None = Field(default=None, min_length=1, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_INTEGER)
    expected_version: int | None = Field(default=None, ge=0, le=MAX_VERSION)
    stream: bool = False
    # 202 at once; the run goes on, to be joined or read whenever the client likes.
    background: bool = False
    # What a streaming client's leaving does to its run: nothing, or cancel it.
    on_disconnect: Literal["continue", "cancel"] = "continue"
    # What happens when the thread is busy (docs/api.md, double-texting).
    if_busy: Literal["reject", "enqueue", "interrupt", "rollback"] = "reject"


class EditRequest(_Answering):
    """The edited question's new text: a sibling of the message edited."""

    content: Content = Field(min_length=1)


class RegenerateRequest(_Answering):
    pass


class CheckoutRequest(_Strict):
    message_id: Text = Field(min_length=1, max_length=64)
    expected_version: int | None = Field(default=None, ge=0, le=MAX_VERSION)


class ChatRequest(_Answering):
    thread_id: Text | None = Field(default=None, min_length=1, max_length=64)
    messages: list[MessageIn] = Field(default_factory=list)
    system_prompt: Text | None = Field(default=None, min_length=1, max_length=20_000)
    metadata: Metadata | None = None


class ThreadCreate(_Strict):
    title: Text | None = Field(default=None, max_length=500)
    metadata: Metadata = Field(default_factory=dict)


class ThreadPatch(_Strict):
    title: Text | None = Field(default=None, max_length=500)
    metadata: Metadata | None = None


class ForkRequest(_Strict):
    at_version: int | None = Field(default=None, ge=1, le=MAX_VERSION)


class Message(BaseModel):
    id: str
    role: str
    content: str
    created_at: datetime
    version: int
    run_id: str | None
    # The message it follows (None for a thread's first): threads are trees.
    parent_id: str | None

    @classmethod
    def of(cls, message: MessageState) -> Message:
        return cls(
            id=message.message_id,
            role=message.role,
            content=message.content,
            created_at=message.created_at,
            version=message.version,
            run_id=message.run_id,
            parent_id=message.parent_id,
        )


class PathMessage(Message):
    """A message of the active path, with the versions a UI pages through (‹ i/n ›)."""

    # The messages with the same parent, itself included, oldest first.
    sibling_ids: list[str]

    @classmethod
    def listed(cls, message: MessageState, sibling_ids: list[str]) -> PathMessage:
        return cls(**Message.of(message).model_dump(), sibling_ids=sibling_ids)


class ReplayedMessage(PathMessage):
    """A message as the admin replay shows it: every branch, rolled-back ones too, marked;
    `active` on the path that was active at the replay's version."""

    rolled_back: bool
    active: bool

    @classmethod
    def replayed(cls, message: MessageState, sibling_ids: list[str]) -> ReplayedMessage:
        return cls(
            **PathMessage.listed(message, sibling_ids).model_dump(),
            rolled_back=message.rolled_back,
            active=message.active,
        )


class Thread(BaseModel):
    id: str
    title: str | None
    created_at: datetime
    updated_at: datetime
    version: int
    message_count: int
    status: Literal["idle", "busy"]
    metadata: dict[str, Any]
    # The active leaf: the last message of the active path (None while it is empty).
    head_id: str | None

    @classmethod
    def of(cls, thread: ThreadState) -> Thread:
        return cls(
            id=thread.thread_id,
            title=thread.title,
            created_at=thread.created_at,
            updated_at=thread.updated_at,
            version=thread.version,
            message_count=thread.message_count,
            status=thread.status,
            metadata=thread.metadata,
            head_id=thread.head_id,
        )


class Usage(BaseModel):
    prompt_tokens: int | None = None
    completion_tokens: int | None = None
    total_tokens: int | None = None


class RunError(BaseModel):
    code: str
    message: str


class Run(BaseModel):
    """One run of a thread; `pending` while it waits in its thread's queue."""

    id: str
    thread_id: str
    status: Literal["pending", "running", "completed", "failed", "cancelled"]
    created_at: datetime
    started_at: datetime | None
    ended_at: datetime | None
    model: str | None
    usage: dict[str, Any] | None
    error: RunError | None
    message_id: str | None
    cancelled_by: Literal["user", "interrupt", "rollback", "shutdown"] | None

    @classmethod
    def of(cls, run: RunState) -> Run:
        return cls(
            id=run.run_id,
            thread_id=run.thread_id,
            status=run.status,
            created_at=run.created_at,
            started_at=run.started_at,
            ended_at=run.ended_at,
            model=run.model,
            usage=run.usage,
            error=RunError(**run.error) if run.error else None,
            message_id=run.message_id,
            cancelled_by=run.cancelled_by,
        )


class RunList(BaseModel):
    runs: list[Run]
    next_cursor: str | None


class ChatResponse(BaseModel):
    thread_id: str
    run_id: str
    message: Message
    usage: Usage | None
    finish_reason: str | None
    model: str
    version: int


class ThreadList(BaseModel):
    threads: list[Thread]
    next_cursor: str | None


class MessageList(BaseModel):
    messages: list[PathMessage]
    # Pass it as `after_version` to read the next page.
    next_cursor: str | None


class CancelAccepted(BaseModel):
    run_id: str


class RunAccepted(BaseModel):
    """A background run: where it is now (join its stream or read it to follow it)."""

    thread_id: str
    run_id: str
    status: Literal["pending", "running", "completed", "failed", "cancelled"]


class ServiceInfo(BaseModel):
    service: Literal["main-backend"] = "main-backend"
    version: str
    status: Literal["ok"] = "ok"


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded", "draining"]
    checks: dict[str, dict[str, Any]]


# The admin API (Bearer ADMIN_TOKEN).


class AdminThread(Thread):
    """A thread as operators see it: whose it is, and whether its owner deleted it."""

    owner: str
    deleted: bool

    @classmethod
    def of(cls, thread: ThreadState) -> AdminThread:
        return cls(**Thread.of(thread).model_dump(), owner=thread.owner, deleted=thread.deleted)


class AdminThreadList(BaseModel):
    threads: list[AdminThread]
    next_cursor: str | None


class Event(BaseModel):
    """One stored event of the log, as it was appended."""

    position: int
    event_id: str
    thread_id: str
    version: int
    type: str
    data: dict[str, Any]
    metadata: dict[str, Any]
    recorded_at: datetime

    @classmethod
    def of(cls, event: StoredEvent) -> Event:
        return cls(
            position=event.position,
            event_id=event.event_id,
            thread_id=event.thread_id,
            version=event.version,
            type=event.type,
            data=event.data,
            metadata=event.metadata,
            recorded_at=event.recorded_at,
        )


class ThreadEventList(BaseModel):
    events: list[Event]
    # Pass it as `from_version` to read the next page; null at the end of the thread.
    next_from_version: int | None


class EventFeed(BaseModel):
    events: list[Event]
    # The position of the last event returned (the given `after_position` when none):
    # pass it as `after_position` to read on.
    next_after_position: int


class PromptMessage(BaseModel):
    role: str
    content: str


class PromptParams(BaseModel):
    """What a turn passes to the LLM besides the messages (more keys are kept as recorded)."""

    model_config = ConfigDict(extra="allow")

    temperature: float
    max_tokens: int | None = None


class ReplayPrompt(BaseModel):
    """Exactly what a turn at that version sends to the LLM agent."""

    model: str
    params: PromptParams
    messages: list[PromptMessage]


class ReplayResponse(BaseModel):
    at_version: int
    thread: Thread
    messages: list[ReplayedMessage]
    prompt: ReplayPrompt


class ReplayRequest(_Strict):
    """Omitted fields keep the replay's own (the recorded run's, else a new turn's)."""

    at_version: int | None = Field(default=None, ge=1, le=MAX_VERSION)
    model: Text | None = Field(default=None, min_length=1, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1, le=MAX_INTEGER)


class AssistantAnswer(BaseModel):
    role: Literal["assistant"] = "assistant"
    content: str


class RerunResponse(BaseModel):
    at_version: int
    prompt: ReplayPrompt
    message: AssistantAnswer
    usage: Usage | None
    # The model the LLM agent reports it used.
    model: str


class RebuildResponse(BaseModel):
    events: int
    threads: int
    messages: int
    runs: int
    duration_ms: float


class VerifyResponse(BaseModel):
    ok: bool
    # Each: {"kind", "thread_id", "message_id"?, "run_id"?, "field"?, "expected"?, "actual"?}.
    mismatches: list[dict[str, Any]]
