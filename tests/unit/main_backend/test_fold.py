"""The pure fold of events into thread and message state."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest

from main_backend.errors import InvalidEvent
from main_backend.events.fold import fold
from main_backend.events.types import (
    MESSAGE_ADDED,
    RUN_CANCELLED,
    RUN_FAILED,
    THREAD_DELETED,
    THREAD_UPDATED,
    NewEvent,
    StoredEvent,
)
from tests.support.events import message_added, run_completed, run_started, thread_created

T0 = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def stored(new_events: list[NewEvent], thread_id: str = "t1") -> list[StoredEvent]:
    return [
        StoredEvent(
            position=100 + i,
            event_id=e.event_id,
            thread_id=thread_id,
            version=i,
            type=e.type,
            data=e.data,
            metadata=e.metadata,
            recorded_at=T0 + timedelta(seconds=i),
        )
        for i, e in enumerate(new_events, start=1)
    ]


def test_a_conversation_folds_into_state_and_messages() -> None:
    question = message_added("Hi?")
    answer = message_added("Hello!", role="assistant", run_id="r1")
    state, messages = fold(
        stored(
            [
                thread_created(owner="bob", title="Greeting", system_prompt="Be brief."),
                question,
                run_started("r1", 2),
                answer,
                run_completed("r1", answer.data["message_id"]),
            ]
        )
    )
    assert state is not None
    assert (state.owner, state.title, state.system_prompt) == ("bob", "Greeting", "Be brief.")
    assert (state.version, state.message_count, state.status) == (5, 2, "idle")
    assert state.created_at == T0 + timedelta(seconds=1)
    assert state.updated_at == T0 + timedelta(seconds=5)
    assert [(m.role, m.content, m.version, m.run_id) for m in messages] == [
        ("user", "Hi?", 2, None),
        ("assistant", "Hello!", 4, "r1"),
    ]


@pytest.mark.parametrize("terminal", [RUN_FAILED, RUN_CANCELLED])
def test_a_run_is_active_until_its_terminal_event(terminal: str) -> None:
    data = {"run_id": "r1", "error": {}, "partial_content": "", "message_id": "m"}
    events = stored(
        [thread_created(), message_added(), run_started("r1", 2), NewEvent(terminal, data)]
    )
    busy, _ = fold(events[:3])
    assert busy is not None and (busy.status, busy.active_run_id) == ("busy", "r1")
    idle, _ = fold(events[3:], busy)
    assert idle is not None and (idle.status, idle.active_run_id) == ("idle", None)


def test_updates_and_deletion() -> None:
    state, _ = fold(
        stored(
            [
                thread_created(title="old"),
                NewEvent(THREAD_UPDATED, {"title": "new"}),
                NewEvent(THREAD_UPDATED, {"metadata": {"tag": "x"}}),
                NewEvent(THREAD_DELETED, {}),
            ]
        )
    )
    assert state is not None
    assert (state.title, state.metadata, state.deleted) == ("new", {"tag": "x"}, True)


def test_a_thread_must_start_with_its_creation() -> None:
    with pytest.raises(InvalidEvent, match="must start with"):
        fold(stored([message_added()]))


def test_a_thread_is_created_once() -> None:
    with pytest.raises(InvalidEvent, match="exists already"):
        fold(stored([thread_created(), thread_created()]))


def test_versions_must_follow_each_other() -> None:
    created, message = stored([thread_created(), message_added()])
    with pytest.raises(InvalidEvent, match="does not follow"):
        fold([created, replace(message, version=3)])


def test_a_message_whose_role_is_not_the_catalogues_is_skipped() -> None:
    # Written around the append checks: a prompt must never carry it to the agent.
    odd = NewEvent(MESSAGE_ADDED, {**message_added("odd").data, "role": "tool"})
    state, messages = fold(stored([thread_created(), odd, message_added("fine")]))
    assert state is not None and (state.version, state.message_count) == (3, 1)
    assert [(m.role, m.content) for m in messages] == [("user", "fine")]
