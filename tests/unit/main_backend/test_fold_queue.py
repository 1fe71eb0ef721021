"""The pure fold of queued runs (`run.queued`) and rollbacks (`run.rolled_back`)."""

from __future__ import annotations

from typing import Any

import pytest

from main_backend.conversation.turns import plan_queued_start, queued_run_end
from main_backend.errors import InvalidEvent
from main_backend.events.fold import fold, fold_runs
from main_backend.events.types import (
    MESSAGE_ADDED,
    RUN_CANCELLED,
    RUN_QUEUED,
    RUN_ROLLED_BACK,
    RUN_STARTED,
    NewEvent,
    check_new_events,
)
from tests.support.events import message_added, run_started, thread_created
from tests.unit.main_backend.test_fold import stored


def queued(run_id: str, *contents: str, **data: Any) -> NewEvent:
    return NewEvent(
        RUN_QUEUED,
        {
            "run_id": run_id,
            "model": "gpt-4o-mini",
            "params": {"temperature": 0.5, "max_tokens": None},
            "messages": [{"role": "user", "content": c} for c in contents],
            **data,
        },
        {"request_id": "req-q", "user": "alice"},
    )


def cancelled(run_id: str, by: str, message_id: str | None = None) -> NewEvent:
    data: dict[str, Any] = {"run_id": run_id, "cancelled_by": by}
    if message_id is not None:
        data["message_id"] = message_id
    return NewEvent(RUN_CANCELLED, data)


def test_queued_runs_wait_in_order_and_leave_the_queue_when_they_start_or_end() -> None:
    events = stored(
        [
            thread_created(),
            message_added("Q1"),
            run_started("r1", 2),
            queued("r2", "Q2"),
            queued("r3", "Q3"),
            queued("r2", "Q2 again"),  # a second run.queued of one run queues it once
        ]
    )
    state, messages = fold(events)
    assert state is not None
    assert (state.active_run_id, state.queued_run_ids, state.status) == ("r1", ["r2", "r3"], "busy")
    # Queued input is not history: only Q1 is a message.
    assert [m.content for m in messages] == ["Q1"]
    assert state.message_count == 1

    later = stored(
        [
            thread_created(),
            queued("r2", "Q2"),
            queued("r3", "Q3"),
            run_started("r2", 3),
            cancelled("r3", "user"),
        ]
    )
    state, _ = fold(later)
    assert state is not None
    assert (state.active_run_id, state.queued_run_ids) == ("r2", [])


def test_a_thread_with_only_queued_runs_is_busy() -> None:
    state, _ = fold(stored([thread_created(), queued("r2", "Q2")]))
    assert state is not None and state.active_run_id is None and state.status == "busy"


def test_runs_are_pending_from_queued_to_started() -> None:
    events = stored(
        [thread_created(), queued("r1", "Q1"), queued("r2", "Q2"), run_started("r1", 3)]
    )
    runs = fold_runs(events)
    r1, r2 = runs["r1"], runs["r2"]
    assert (r1.status, r2.status) == ("running", "pending")
    assert r1.created_at == events[1].recorded_at and r1.started_at == events[3].recorded_at
    assert (r2.started_at, r2.ended_at, r2.model) == (None, None, "gpt-4o-mini")
    # Folded onto what was known: the same result as at once.
    assert fold_runs(events[3:], fold_runs(events[:3])) == {"r1": r1}


def test_a_queued_run_cancelled_before_it_starts_has_no_answer() -> None:
    runs = fold_runs(stored([thread_created(), queued("r1", "Q1"), cancelled("r1", "user")]))
    r1 = runs["r1"]
    assert (r1.status, r1.started_at, r1.message_id, r1.cancelled_by) == (
        "cancelled",
        None,
        None,
        "user",
    )


def test_a_rollback_marks_its_messages_and_lowers_the_count() -> None:
    q1, a1 = message_added("Q1"), message_added("partial", role="assistant", run_id="r1")
    rolled = NewEvent(
        RUN_ROLLED_BACK,
        {"run_id": "r1", "message_ids": [q1.data["message_id"], a1.data["message_id"]]},
    )
    events = stored(
        [
            thread_created(),
            message_added("Q0"),
            q1,
            run_started("r1", 3),
            a1,
            cancelled("r1", "rollback", a1.data["message_id"]),
            rolled,
        ]
    )
    state, messages = fold(events)
    assert state is not None
    assert [(m.content, m.rolled_back) for m in messages] == [
        ("Q0", False),
        ("Q1", True),
        ("partial", True),
    ]
    assert state.message_count == 1 and state.active_run_id is None
    # Folded in two appends (as the store does), the count is the same.
    head, _ = fold(events[:4])
    tail, _ = fold(events[4:], head)
    assert tail is not None and tail.message_count == 1


@pytest.mark.parametrize(
    "data",
    [
        {"run_id": "r1", "message_ids": "not a list"},
        {"message_ids": ["m"]},
        {"run_id": "r1", "message_ids": [5, None, {"k": 1}]},
    ],
)
def test_an_odd_stored_rollback_is_skipped_or_read_for_what_it_holds(
    data: dict[str, Any],
) -> None:
    q = message_added("Q0")
    state, messages = fold(stored([thread_created(), q, NewEvent(RUN_ROLLED_BACK, data)]))
    assert state is not None and state.version == 3
    assert [m.rolled_back for m in messages] == [False] and state.message_count == 1


def test_an_odd_stored_queue_entry_without_a_run_id_is_skipped() -> None:
    state, _ = fold(stored([thread_created(), NewEvent(RUN_QUEUED, {"model": "m"})]))
    assert state is not None and state.queued_run_ids == [] and state.version == 2


def test_starting_a_queued_run_records_its_input_then_run_started() -> None:
    events = stored([thread_created(), queued("0b5f3c1e-0000-4000-8000-000000000001", "Q1", "Q2")])
    state, _ = fold(events)
    assert state is not None
    plan = plan_queued_start(state, events[-1])
    assert plan.expected_version == 2 and plan.request_id == "req-q"
    assert [e.type for e in plan.events] == [MESSAGE_ADDED, MESSAGE_ADDED, RUN_STARTED]
    assert [e.data["content"] for e in plan.events[:2]] == ["Q1", "Q2"]
    assert plan.events[-1].data["prompt_version"] == plan.prompt_version == 4
    assert plan.params == {"temperature": 0.5, "max_tokens": None}
    assert all(e.metadata == {"request_id": "req-q", "user": "alice"} for e in plan.events)
    check_new_events(state.thread_id, plan.events, plan.expected_version)


@pytest.mark.parametrize(
    "messages",
    ["nope", [5], [{"role": "tool", "content": "x"}], [{"role": "user", "content": 1}]],
)
def test_a_queued_run_whose_stored_input_cannot_be_read_does_not_start(messages: Any) -> None:
    events = stored([thread_created(), queued("r1", messages=messages)])
    state, _ = fold(events)
    assert state is not None
    with pytest.raises(InvalidEvent):
        plan_queued_start(state, events[-1])


@pytest.mark.parametrize("problem", [None, "unreadable"])
def test_a_queued_run_that_never_starts_ends_with_one_storable_terminal_event(
    problem: str | None,
) -> None:
    # Any run id, even one that is not a UUID (written around the checks), can be ended.
    for run_id in ("0b5f3c1e-0000-4000-8000-000000000001", "not-a-uuid"):
        event = queued_run_end(run_id, {"request_id": None, "user": None}, problem)
        check_new_events("t1", [event], 2)
        runs = fold_runs(stored([thread_created(), queued(run_id, "Q"), event]))
        assert runs[run_id].status == ("cancelled" if problem is None else "failed")
