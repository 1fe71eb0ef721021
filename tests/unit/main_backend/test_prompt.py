"""Prompt building: pure functions of the thread's messages."""

from __future__ import annotations

from datetime import UTC, datetime

from main_backend.conversation.prompt import assemble_prompt, select_history
from main_backend.events.fold import MessageState
from main_backend.events.types import MessageRole
from stubichat_common.tokens import estimate_tokens

T0 = datetime(2026, 11, 24, tzinfo=UTC)


def message(version: int, role: MessageRole, content: str) -> MessageState:
    return MessageState(f"m{version}", "t", version, role, content, None, False, T0)


def newest_first(*messages: MessageState) -> list[MessageState]:
    return sorted(messages, key=lambda m: -m.version)


def test_everything_fits_in_order() -> None:
    history = [
        message(2, "user", "hi"),
        message(4, "assistant", "hello"),
        message(5, "user", "how are you?"),
    ]
    kept, ran_out = select_history(newest_first(*history), budget_tokens=1000)
    assert (kept, ran_out) == (history, False)


def test_the_newest_whole_messages_are_kept() -> None:
    history = [message(v, "user" if v % 2 else "assistant", "x" * 40) for v in range(1, 9)]
    cost = estimate_tokens("x" * 40)
    kept, ran_out = select_history(newest_first(*history), budget_tokens=3 * cost + 1)
    assert ran_out
    assert [m.version for m in kept] == [6, 7, 8]


def test_the_latest_user_message_is_kept_over_budget_and_nothing_older() -> None:
    history = [
        message(1, "user", "old"),
        message(2, "assistant", "older answer"),
        message(3, "user", "y" * 4000),
    ]
    kept, ran_out = select_history(newest_first(*history), budget_tokens=10)
    assert ran_out
    assert [m.version for m in kept] == [3]


def test_empty_partial_answers_are_left_out() -> None:
    history = [message(1, "user", "go"), message(2, "assistant", ""), message(3, "user", "again")]
    kept, _ = select_history(newest_first(*history), budget_tokens=1000)
    assert [m.version for m in kept] == [1, 3]


def test_assemble_prompt_puts_the_system_prompt_first() -> None:
    history = [message(2, "user", "hi")]
    prompt = assemble_prompt("Be brief.", history)
    assert prompt.messages == [
        {"role": "system", "content": "Be brief."},
        {"role": "user", "content": "hi"},
    ]
    assert prompt.estimated_tokens == estimate_tokens("Be brief.") + estimate_tokens("hi")
    assert assemble_prompt(None, []).messages == []
