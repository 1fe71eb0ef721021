"""Builders of catalogue events for tests."""

from __future__ import annotations

from typing import Any

from main_backend.events.types import (
    MESSAGE_ADDED,
    RUN_COMPLETED,
    RUN_STARTED,
    THREAD_CREATED,
    NewEvent,
    new_id,
)


def thread_created(owner: str = "alice", title: str | None = "A thread", **data: Any) -> NewEvent:
    return NewEvent(
        THREAD_CREATED,
        {"owner": owner, "title": title, "metadata": {}, "forked_from": None, **data},
    )


def message_added(
    content: str = "hello",
    role: str = "user",
    run_id: str | None = None,
    partial: bool = False,
    event_id: str | None = None,
) -> NewEvent:
    data = {
        "message_id": new_id(),
        "role": role,
        "content": content,
        "run_id": run_id,
        "partial": partial,
    }
    return NewEvent(MESSAGE_ADDED, data, {"request_id": "test"}, event_id or new_id())


def run_started(run_id: str, prompt_version: int) -> NewEvent:
    return NewEvent(
        RUN_STARTED,
        {
            "run_id": run_id,
            "model": "gpt-4o-mini",
            "params": {"temperature": 0.7},
            "prompt_version": prompt_version,
        },
    )


def run_completed(run_id: str, message_id: str) -> NewEvent:
    return NewEvent(
        RUN_COMPLETED,
        {
            "run_id": run_id,
            "message_id": message_id,
            "finish_reason": "stop",
            "usage": None,
            "latency_ms": 12.5,
            "ttft_ms": 3.0,
        },
    )
