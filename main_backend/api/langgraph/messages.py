"""LangGraph's shapes of Stubichat's objects, and back: pure translations.

A LangGraph state is `{"messages": [...]}` in LangChain's message form; a checkpoint is
a point of the thread's tree: the state whose last message is that message (the empty
state has an id of its own). Nothing here is stored: every state is read off the log's
read model when asked for.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from main_backend.errors import InvalidRequest
from main_backend.events.fold import MessageState, RunState, RunStatus, ThreadState
from main_backend.events.types import MessageRole

GRAPH_ID = "chat"
# The node that answers: what a state waiting for an answer has `next`.
NODE = "chat"
# The one assistant's id: LangGraph names an assistant by a UUID (or its graph's id).
ASSISTANT_ID = str(uuid.uuid5(uuid.NAMESPACE_URL, "stubichat:chat"))
GRAPH_METADATA = {"graph_id": GRAPH_ID, "assistant_id": ASSISTANT_ID}

_TYPES: dict[MessageRole, str] = {"user": "human", "assistant": "ai", "system": "system"}
_ROLES: dict[str, MessageRole] = {
    "human": "user",
    "user": "user",
    "ai": "assistant",
    "assistant": "assistant",
    "system": "system",
    "developer": "system",
}
# Run statuses as LangGraph names them (a cancelled run, rolled back or not, was
# interrupted).
RUN_STATUSES: dict[RunStatus, str] = {
    "pending": "pending",
    "running": "running",
    "completed": "success",
    "failed": "error",
    "cancelled": "interrupted",
}
NATIVE_RUN_STATUSES: dict[str, RunStatus] = {v: k for k, v in RUN_STATUSES.items()}


def lc_message(message: MessageState) -> dict[str, Any]:
    """A message as LangChain serialises it."""
    kind = _TYPES[message.role]
    shaped: dict[str, Any] = {
        "type": kind,
        "content": message.content,
        "id": message.message_id,
        "name": None,
        "additional_kwargs": {},
        "response_metadata": {"finish_reason": "cancelled"} if message.partial else {},
    }
    if kind == "ai":
        shaped |= {"tool_calls": [], "invalid_tool_calls": [], "usage_metadata": None}
    return shaped


def lc_chunk(message_id: str, text: str) -> dict[str, Any]:
    """A piece of an answer as LangChain streams it: joined by `id`, the chunks are the
    answer's message."""
    return {
        "type": "AIMessageChunk",
        "content": text,
        "id": message_id,
        "name": None,
        "additional_kwargs": {},
        "response_metadata": {},
        "tool_calls": [],
        "invalid_tool_calls": [],
        "tool_call_chunks": [],
        "usage_metadata": None,
    }


def values(path: Sequence[MessageState]) -> dict[str, Any]:
    return {"messages": [lc_message(m) for m in path]}


def chat_messages(given: object) -> list[dict[str, str]]:
    """The input's messages (`input.messages`), in LangChain's form (`type`, content as
    text or text parts) or OpenAI's (`role`), as the native API's `{role, content}`."""
    field = "input.messages"
    if isinstance(given, dict):
        given = [given]
    if not isinstance(given, list) or not given:
        raise InvalidRequest("must be a non-empty list of messages", field)
    return [_chat_message(item, f"{field}[{i}]") for i, item in enumerate(given)]


def _chat_message(item: object, field: str) -> dict[str, str]:
    if isinstance(item, str):
        return {"role": "user", "content": item}
    if not isinstance(item, dict):
        raise InvalidRequest("must be a message object (or a string)", field)
    kind = item.get("type", item.get("role"))
    role = _ROLES.get(kind) if isinstance(kind, str) else None
    if role is None:
        raise InvalidRequest(
            "type must be human, ai or system (or role user, assistant or system)", field
        )
    return {"role": role, "content": _text(item.get("content"), f"{field}.content")}


def _text(content: object, field: str) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = []
        for i, part in enumerate(content):
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type") == "text":
                text = part.get("text")
                if not isinstance(text, str):
                    raise InvalidRequest("a text part's text must be a string", f"{field}[{i}]")
                parts.append(text)
            else:
                raise InvalidRequest(
                    "only text content is supported (parts of type text)", f"{field}[{i}]"
                )
        return "".join(parts)
    raise InvalidRequest("must be a string or a list of text parts", field)


def empty_checkpoint_id(thread_id: str) -> str:
    """The checkpoint of a thread's state before its first message."""
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"stubichat:empty-state:{thread_id}"))


def checkpoint(thread_id: str, path: Sequence[MessageState]) -> dict[str, Any]:
    checkpoint_id = path[-1].message_id if path else empty_checkpoint_id(thread_id)
    return {"thread_id": thread_id, "checkpoint_ns": "", "checkpoint_id": checkpoint_id}


def state(thread: ThreadState, path: Sequence[MessageState]) -> dict[str, Any]:
    """The thread's state whose last message is `path`'s last (the empty state for an
    empty path): waiting for the chat node when it ends with a question."""
    last = path[-1] if path else None
    waiting = last is not None and last.role == "user"
    return {
        "values": values(path),
        "next": [NODE] if waiting else [],
        "tasks": [_task(last)] if waiting and last else [],
        "checkpoint": checkpoint(thread.thread_id, path),
        "parent_checkpoint": checkpoint(thread.thread_id, path[:-1]) if path else None,
        "metadata": {
            **GRAPH_METADATA,
            "source": "input" if last is None or last.role == "user" else "loop",
            "step": len(path) - 1,
            "run_id": last.run_id if last else None,
            "parents": {},
        },
        "created_at": _iso(last.created_at if last else thread.created_at),
        "interrupts": [],
    }


def history(
    thread: ThreadState,
    path: Sequence[MessageState],
    limit: int,
    before: str | None,
    metadata: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """The states along `path`, newest first (the empty state last): those older than the
    checkpoint `before` only if given, and whose metadata holds `metadata`'s keys with
    equal values, `limit` of them."""
    end = len(path)
    if before is not None:
        ids = [m.message_id for m in path]
        if before not in ids:
            return []  # the empty state, or a checkpoint of another branch: nothing older
        end = ids.index(before)
    found: list[dict[str, Any]] = []
    for n in range(end, -1, -1):
        if len(found) == limit:
            break
        candidate = state(thread, path[:n])
        if all(candidate["metadata"].get(k) == v for k, v in (metadata or {}).items()):
            found.append(candidate)
    return found


def _task(question: MessageState) -> dict[str, Any]:
    return {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"stubichat:task:{question.message_id}")),
        "name": NODE,
        "path": ["__pregel_pull", NODE],
        "error": None,
        "interrupts": [],
        "checkpoint": None,
        "state": None,
        "result": None,
    }


def thread(thread: ThreadState, path: Sequence[MessageState]) -> dict[str, Any]:
    """A thread as LangGraph describes it, `values` being its active path's state."""
    return {
        "thread_id": thread.thread_id,
        "created_at": _iso(thread.created_at),
        "updated_at": _iso(thread.updated_at),
        "state_updated_at": _iso(thread.updated_at),
        "metadata": thread.metadata,
        "status": thread.status,
        "values": values(path),
        "interrupts": {},
        "config": {},
        "error": None,
    }


def run(run: RunState) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "thread_id": run.thread_id,
        "assistant_id": ASSISTANT_ID,
        "created_at": _iso(run.created_at),
        "updated_at": _iso(run.ended_at or run.started_at or run.created_at),
        "status": RUN_STATUSES[run.status],
        "metadata": {},
        "multitask_strategy": None,
        "kwargs": {},
    }


def assistant() -> dict[str, Any]:
    created = "2025-01-01T00:00:00+00:00"
    return {
        "assistant_id": ASSISTANT_ID,
        "graph_id": GRAPH_ID,
        "name": GRAPH_ID,
        "description": "Stubichat's chat turn: answers the thread's newest question",
        "config": {},
        "context": {},
        "metadata": {"created_by": "system"},
        "version": 1,
        "created_at": created,
        "updated_at": created,
    }


def _iso(moment: datetime) -> str:
    return moment.isoformat()
