"""Request bodies of the LangGraph routes, as the LangGraph SDKs send them.

Unknown fields are ignored (a newer SDK sends more); a field whose meaning this server
cannot honour is refused with 422 when it asks for something (`refuse_unsupported`).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from main_backend.api.schemas import Metadata, Text
from main_backend.errors import InvalidRequest
from main_backend.values import MAX_INTEGER

# The ids a client may choose for a new thread: they go into URLs and headers as they are.
NEW_THREAD_ID = r"^[A-Za-z0-9._~-]{1,64}$"


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    def refuse(self, refused: dict[str, tuple[object, str]]) -> None:
        """422 for a field this server cannot honour that asks for something, rather than
        a request that ignores it (`{field: (value, why)}`)."""
        for field, (value, reason) in refused.items():
            if value:
                raise InvalidRequest(reason, field)


class Checkpoint(_Body):
    checkpoint_id: Text | None = Field(default=None, max_length=64)
    checkpoint_ns: str | None = None
    thread_id: str | None = None


class _Configurable(_Body):
    checkpoint_id: Text | None = Field(default=None, max_length=64)


class CheckpointConfig(_Body):
    """A checkpoint as the JS SDK names it: a config (`{"configurable": {...}}`)."""

    configurable: _Configurable


def checkpoint_id(given: str | Checkpoint | CheckpointConfig | None) -> str | None:
    if isinstance(given, CheckpointConfig):
        return given.configurable.checkpoint_id
    if isinstance(given, Checkpoint):
        return given.checkpoint_id
    return given


class AssistantSearch(_Body):
    graph_id: str | None = None
    name: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_INTEGER)


class ThreadCreate(_Body):
    thread_id: str | None = Field(default=None, pattern=NEW_THREAD_ID)
    metadata: Metadata = Field(default_factory=dict)
    if_exists: Literal["raise", "do_nothing"] = "raise"
    supersteps: list[Any] | None = None
    ttl: dict[str, Any] | int | None = None

    def refuse_unsupported(self) -> None:
        self.refuse(
            {
                "supersteps": (self.supersteps, "a thread starts empty: run it to add messages"),
                "ttl": (self.ttl, "threads are kept until they are deleted"),
            }
        )


class ThreadPatch(_Body):
    metadata: Metadata = Field(default_factory=dict)


class ThreadSearch(_Body):
    ids: list[Text] | None = Field(default=None, max_length=1000)
    metadata: dict[str, Any] = Field(default_factory=dict)
    values: dict[str, Any] | None = None
    status: Literal["idle", "busy", "interrupted", "error"] | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_INTEGER)
    sort_by: Literal["thread_id", "created_at", "updated_at"] = "updated_at"
    sort_order: Literal["asc", "desc"] = "desc"

    def refuse_unsupported(self) -> None:
        self.refuse({"values": (self.values, "threads are not searched by their values")})


class HistoryRequest(_Body):
    limit: int = Field(default=10, ge=1, le=1000)
    before: Text | Checkpoint | CheckpointConfig | None = None
    checkpoint: Checkpoint | CheckpointConfig | None = None
    metadata: dict[str, Any] | None = None


class RunConfig(_Body):
    configurable: dict[str, Any] | None = None


class RunCreate(_Body):
    assistant_id: Text = Field(min_length=1, max_length=64)
    input: dict[str, Any] | None = None
    command: dict[str, Any] | None = None
    stream_mode: str | list[str] | None = None
    stream_subgraphs: bool = False
    stream_resumable: bool = False
    metadata: dict[str, Any] | None = None
    config: RunConfig | None = None
    context: dict[str, Any] | None = None
    checkpoint: Checkpoint | None = None
    checkpoint_id: Text | None = Field(default=None, max_length=64)
    interrupt_before: str | list[str] | None = None
    interrupt_after: str | list[str] | None = None
    webhook: str | None = None
    after_seconds: float | None = Field(default=None, ge=0)
    multitask_strategy: Literal["reject", "enqueue", "interrupt", "rollback"] = "reject"
    if_not_exists: Literal["create", "reject"] = "reject"
    on_disconnect: Literal["continue", "cancel"] = "continue"
    on_completion: Literal["delete", "keep"] | None = None

    def refuse_unsupported(self) -> None:
        """422 for what the chat graph cannot do, rather than a run that ignores it."""
        never = "the chat graph never interrupts, so there is nothing to resume"
        self.refuse(
            {
                "command": (self.command, never),
                "interrupt_before": (self.interrupt_before, "the chat graph has no interrupts"),
                "interrupt_after": (self.interrupt_after, "the chat graph has no interrupts"),
                "webhook": (self.webhook, "webhooks are not supported"),
                "after_seconds": (self.after_seconds, "delayed runs are not supported"),
                "on_completion": (
                    self.on_completion == "delete",
                    "a run's thread is kept: delete it with DELETE /threads/{thread_id}",
                ),
            }
        )

    def asked_checkpoint(self) -> str | None:
        """The checkpoint the client starts the run from, if it names one."""
        return self.checkpoint_id or (self.checkpoint.checkpoint_id if self.checkpoint else None)

    def knobs(self) -> dict[str, Any]:
        """The answer's parameters given in `context` or `config.configurable`: model,
        temperature, max_tokens, system_prompt (context wins)."""
        configurable = (self.config.configurable if self.config else None) or {}
        given = {**configurable, **(self.context or {})}
        names = ("model", "temperature", "max_tokens", "system_prompt")
        return {k: given[k] for k in names if given.get(k) is not None}
