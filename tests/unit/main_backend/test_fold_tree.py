"""The pure fold of threads as trees: parents, the active leaf, the active path, siblings,
and the upcaster that reads events written before trees as one linear branch."""

from __future__ import annotations

from typing import Any

import pytest

from main_backend.conversation.turns import plan_queued_start
from main_backend.errors import InvalidEvent
from main_backend.events.fold import active_path, children, fold, path_ids
from main_backend.events.types import (
    MESSAGE_ADDED,
    RUN_QUEUED,
    RUN_ROLLED_BACK,
    THREAD_HEAD_MOVED,
    NewEvent,
    check_new_events,
)
from tests.support.events import message_added, thread_created
from tests.unit.main_backend.test_fold import stored


def node(message_id: str, parent_id: object, role: str = "user", **data: Any) -> NewEvent:
    return NewEvent(
        MESSAGE_ADDED,
        {
            "message_id": message_id,
            "role": role,
            "content": f"text of {message_id}",
            "run_id": None,
            "partial": False,
            "parent_id": parent_id,
            **data,
        },
    )


def head_moved(message_id: str | None) -> NewEvent:
    return NewEvent(THREAD_HEAD_MOVED, {"message_id": message_id})


def ids(messages: list[Any]) -> list[str]:
    return [m.message_id for m in messages]


# q1 ─ a1 ─ q2 ─ a2         (a turn, then another)
#           └ q2' ─ a2'     (q2 edited)
#                └ a2''     (a2' regenerated)
TREE = [
    thread_created(),
    node("q1", None),
    node("a1", "q1", "assistant"),
    node("q2", "a1"),
    node("a2", "q2", "assistant"),
    node("q2'", "a1"),
    node("a2'", "q2'", "assistant"),
    node("a2''", "q2'", "assistant"),
]


def test_a_new_message_becomes_the_active_leaf_and_the_path_runs_from_it_to_the_root() -> None:
    state, messages = fold(stored(TREE))
    assert state is not None
    assert state.head_id == "a2''"
    assert ids(active_path(messages, state.head_id)) == ["q1", "a1", "q2'", "a2''"]
    assert [m.message_id for m in messages if m.active] == ["q1", "a1", "q2'", "a2''"]
    assert {m.message_id: m.parent_id for m in messages}["a2''"] == "q2'"
    # Every message of every branch is counted.
    assert state.message_count == 7


def test_siblings_are_the_children_of_one_parent_oldest_first() -> None:
    _, messages = fold(stored(TREE))
    tree = children(messages)
    assert tree[None] == ["q1"]
    assert tree["a1"] == ["q2", "q2'"]
    assert tree["q2'"] == ["a2'", "a2''"]
    assert tree["q2"] == ["a2"]


def test_a_head_move_redraws_the_active_path() -> None:
    state, messages = fold(stored([*TREE, head_moved("a2")]))
    assert state is not None
    assert state.head_id == "a2"
    assert [m.message_id for m in messages if m.active] == ["q1", "a1", "q2", "a2"]
    # A move to an inner message cuts the path there; to None, the path is empty.
    state, messages = fold(stored([*TREE, head_moved("a1")]))
    assert [m.message_id for m in messages if m.active] == ["q1", "a1"]
    state, messages = fold(stored([*TREE, head_moved(None)]))
    assert state is not None and state.head_id is None
    assert not any(m.active for m in messages)


def test_a_turn_after_a_move_hangs_under_the_new_leaf() -> None:
    legacy = message_added("after the move")  # no parent_id: hangs under the active leaf
    state, messages = fold(stored([*TREE, head_moved("a2"), legacy]))
    assert state is not None
    new = messages[-1]
    assert new.parent_id == "a2"
    assert state.head_id == new.message_id
    assert ids(active_path(messages, state.head_id)) == ["q1", "a1", "q2", "a2", new.message_id]


def test_events_written_before_trees_read_as_one_linear_branch() -> None:
    old = [message_added(f"m{i}", role="user" if i % 2 == 0 else "assistant") for i in range(5)]
    assert all("parent_id" not in e.data for e in old)
    state, messages = fold(stored([thread_created(), *old]))
    assert state is not None
    assert [m.parent_id for m in messages] == [None, *(m.message_id for m in messages[:-1])]
    assert all(m.active for m in messages)
    assert state.head_id == messages[-1].message_id
    # The fold is incremental: folding in two parts gives the same tree.
    events = stored([thread_created(), *old])
    first, _ = fold(events[:3])
    again, rest = fold(events[3:], first)
    assert again == state
    assert [m.parent_id for m in rest] == [m.parent_id for m in messages[2:]]


def test_a_rollback_written_before_trees_leaves_its_messages_off_the_path() -> None:
    # Then a rollback was [answer, run.cancelled, run.rolled_back], no thread.head_moved:
    # the queued question after it followed the message before the rolled-back run.
    q0, a0, q1, a1, q2 = (message_added(c) for c in ("Q0", "A0", "Q1", "A1 partial", "Q2"))
    gone = [q1.data["message_id"], a1.data["message_id"]]
    rollback = NewEvent(RUN_ROLLED_BACK, {"run_id": "r1", "message_ids": gone})
    state, messages = fold(stored([thread_created(), q0, a0, q1, a1, rollback, q2]))
    assert state is not None
    by_content = {m.content: m for m in messages}
    assert by_content["Q2"].parent_id == a0.data["message_id"]
    assert [m.content for m in active_path(messages, state.head_id)] == ["Q0", "A0", "Q2"]
    assert [m.content for m in messages if m.active] == ["Q0", "A0", "Q2"]
    # Right after the rollback, the leaf is the message before the run already.
    after, _ = fold(stored([thread_created(), q0, a0, q1, a1, rollback]))
    assert after is not None and after.head_id == a0.data["message_id"]


def test_a_rollback_of_today_moves_the_leaf_where_its_head_move_says() -> None:
    events = stored(
        [
            *TREE,
            node("q3", "a2''"),
            node("a3", "q3", "assistant"),
            NewEvent(RUN_ROLLED_BACK, {"run_id": "r", "message_ids": ["q3", "a3"]}),
            head_moved("a2"),
        ]
    )
    state, messages = fold(events)
    assert state is not None and state.head_id == "a2"
    assert ids(active_path(messages, state.head_id)) == ["q1", "a1", "q2", "a2"]


def test_an_incremental_fold_marks_the_path_only_as_far_as_its_own_messages_reach() -> None:
    events = stored(TREE)
    before, _ = fold(events[:5])  # q1 a1 q2 a2
    state, new = fold(events[5:], before)  # q2' a2' a2''
    assert state is not None
    # a2' is on no path; q2' and a2'' are; a1 (below) is not among these messages.
    assert {m.message_id: m.active for m in new} == {"q2'": True, "a2'": False, "a2''": True}


def test_a_cycle_written_around_the_checks_ends_the_walk() -> None:
    state, messages = fold(
        stored([thread_created(), node("x", "y"), node("y", "x"), head_moved("x")])
    )
    assert state is not None
    assert path_ids(messages, "x") == ["x", "y"]
    assert ids(active_path(messages, "unknown")) == []


def test_the_new_event_and_fields_are_checked_before_any_append() -> None:
    check_new_events("t1", [head_moved("m1"), head_moved(None), node("m2", None)], 3)
    for bad in (
        NewEvent(THREAD_HEAD_MOVED, {}),
        NewEvent(THREAD_HEAD_MOVED, {"message_id": 7}),
        node("m3", 12),
    ):
        with pytest.raises(InvalidEvent):
            check_new_events("t1", [bad], 3)


def test_a_queued_rebranch_starts_under_its_message_and_a_queued_turn_under_the_leaf() -> None:
    base = stored([*TREE, NewEvent(RUN_QUEUED, _queued("r1", [])), _queued_event("r2")])
    state, _ = fold(base)
    assert state is not None and state.head_id == "a2''"
    edit = plan_queued_start(state, base[-2])
    turn = plan_queued_start(state, base[-1])
    # The regeneration (no messages, parent q2) answers q2; the turn hangs under a2''.
    assert edit.parent_id == "q2"
    assert [e.type for e in edit.events] == ["run.started"]
    (question,) = [e for e in turn.events if e.type == MESSAGE_ADDED]
    assert question.data["parent_id"] == "a2''"
    assert turn.parent_id == question.data["message_id"]
    assert question.data["content"] == "next"


def _queued(run_id: str, messages: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "run_id": run_id,
        "model": "m",
        "params": {"temperature": 0.5, "max_tokens": None},
        "messages": messages,
        "parent_id": "q2",
    }


def _queued_event(run_id: str) -> NewEvent:
    data = _queued(run_id, [{"role": "user", "content": "next"}])
    del data["parent_id"]
    return NewEvent(RUN_QUEUED, data)
