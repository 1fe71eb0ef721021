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


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")


class Checkpoint(_Body):
    checkpoint_id: Text | None = Field(default=None, max_length=64)
    checkpoint_ns: str | None = None
    thread_id: str | None = None


class AssistantSearch(_Body):
    graph_id: str | None = None
    name: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_INTEGER)


class ThreadCreate(_Body):
    thread_id: Text | None = Field(default=None, min_length=1, max_length=64)
    metadata: Metadata = Field(default_factory=dict)
    if_exists: Literal["raise", "do_nothing"] = "raise"


class ThreadPatch(_Body):
    metadata: Metadata = Field(default_factory=dict)


class ThreadSearch(_Body):
    metadata: dict[str, Any] = Field(default_factory=dict)
    status: Literal["idle", "busy", "interrupted", "error"] | None = None
    limit: int = Field(default=10, ge=1, le=1000)
    offset: int = Field(default=0, ge=0, le=MAX_INTEGER)
    sort_by: Literal["thread_id", "created_at", "updated_at"] = "updated_at"
    sort_order: Literal["asc", "desc"] = "desc"


class HistoryRequest(_Body):
    limit: int = Field(default=10, ge=1, le=1000)
    before: Text | Checkpoint | None = None
    checkpoint: Checkpoint | None = None
    metadata: dict[str, Any] | None = None


class RunCreate(_Body):
    assistant_id: Text = Field(min_length=1, max_length=64)
    input: dict[str, Any] | None = None
    command: dict[str, Any] | None = None
    stream_mode: str | list[str] | None = None
    stream_subgraphs: bool = False
    stream_resumable: bool = False
    metadata: dict[str, Any] | None = None
    config: dict[str, Any] | None = None
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
        refused = {
            "command": (
                self.command,
                "the chat graph never interrupts, so there is nothing to resume",
            ),
            "interrupt_before": (self.interrupt_before, "the chat graph has no interrupts"),
            "interrupt_after": (self.interrupt_after, "the chat graph has no interrupts"),
            "webhook": (self.webhook, "webhooks are not supported"),
            "after_seconds": (self.after_seconds, "delayed runs are not supported"),
        }
        for field, (value, reason) in refused.items():
            if value:
                raise InvalidRequest(reason, field)

    def asked_checkpoint(self) -> str | None:
        """The checkpoint the client starts the run from, if it names one."""
        return self.checkpoint_id or (self.checkpoint.checkpoint_id if self.checkpoint else None)

    def knobs(self) -> dict[str, Any]:
        """The answer's parameters given in `context` or `config.configurable`: model,
        temperature, max_tokens, system_prompt (context wins)."""
        configurable = (self.config or {}).get("configurable") or {}
        given = {**configurable, **(self.context or {})}
        names = ("model", "temperature", "max_tokens", "system_prompt")
        return {k: given[k] for k in names if given.get(k) is not None}
