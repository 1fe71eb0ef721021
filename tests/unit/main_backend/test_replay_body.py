"""The streamed replay body is the `ReplayResponse` the route's schema describes."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from main_backend.api.routes.admin import _REPLAY_CHUNK, _prompt, _replay_body
from main_backend.api.schemas import ReplayedMessage, ReplayResponse, Thread
from main_backend.conversation.admin import Replay
from main_backend.conversation.prompt import Prompt
from main_backend.events.fold import MessageState, ThreadState, children

AT = datetime(2026, 12, 3, 18, 0, 0, 123456, tzinfo=UTC)


def message(n: int, parent: str | None, **changes: object) -> MessageState:
    values: dict[str, object] = {
        "message_id": f"m{n}",
        "thread_id": "t",
        "version": n + 1,
        "role": "user" if n % 2 == 0 else "assistant",
        "content": f'text {n} é \u2028 "quoted"',
        "run_id": None if n % 2 == 0 else f"r{n}",
        "partial": False,
        "created_at": AT,
        "parent_id": parent,
        "active": True,
    }
    return MessageState(**{**values, **changes})  # type: ignore[arg-type]


def replay(count: int) -> Replay:
    messages = [message(0, None)]
    for n in range(1, count):
        messages.append(message(n, f"m{n - 1}"))
    # A sibling, rolled back and off the path.
    messages.append(message(count, "m0", rolled_back=True, active=False))
    thread = ThreadState(
        thread_id="t",
        owner="u",
        title="A thread",
        metadata={"k": [1, "v"]},
        system_prompt=None,
        forked_from=None,
        created_at=AT,
        updated_at=AT,
        version=count + 2,
        message_count=count,
        active_run_id=None,
        deleted=False,
        head_id=f"m{count - 1}",
    )
    prompt = Prompt(messages=[{"role": "user", "content": "text 0"}], estimated_tokens=3)
    return Replay(count + 2, thread, messages, prompt, "gpt", {"temperature": 1}, False)


def expected(found: Replay) -> object:
    tree = children(found.messages)
    response = ReplayResponse(
        at_version=found.at_version,
        thread=Thread.of(found.thread),
        messages=[
            ReplayedMessage.replayed(m, tree.get(m.parent_id, [m.message_id]))
            for m in found.messages
        ],
        prompt=_prompt(found, found.model, found.params),
    )
    return response.model_dump(mode="json")


def test_the_streamed_replay_is_the_response_model() -> None:
    for count in (1, 3, _REPLAY_CHUNK, _REPLAY_CHUNK + 7):
        found = replay(count)
        body = b"".join(_replay_body(found))
        assert json.loads(body) == expected(found)
