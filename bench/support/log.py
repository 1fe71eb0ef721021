"""Threads grown straight through `EventStore.append`, fast: no turn, no LLM."""

from __future__ import annotations

import uuid

from main_backend.events.store import EventStore
from main_backend.events.types import MESSAGE_ADDED, THREAD_CREATED, NewEvent


def message(i: int) -> NewEvent:
    """A `message.added` of about 270 characters, user and assistant in turn; each
    follows the thread's head."""
    role = "user" if i % 2 else "assistant"
    return NewEvent(
        MESSAGE_ADDED,
        {
            "message_id": str(uuid.uuid4()),
            "role": role,
            "content": f"message {i} " + "lorem ipsum " * 20,
            "run_id": None,
            "partial": False,
        },
    )


async def grow(store: EventStore, thread_id: str, size: int, owner: str = "bench") -> int:
    """Create `thread_id` and append messages until its version is `size`; the version."""
    version = (
        await store.append(
            thread_id,
            [
                NewEvent(
                    THREAD_CREATED,
                    {"owner": owner, "title": None, "metadata": {}, "forked_from": None},
                )
            ],
            0,
        )
    ).version
    while version < size:
        batch = [message(version + i) for i in range(min(500, size - version))]
        version = (await store.append(thread_id, batch, version)).version
    return version
