"""The LangGraph API's pure translations: input messages, states and history along a
path, stream modes, and where a client resumes after an event id."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any

import pytest

from main_backend.api.langgraph import messages as lg
from main_backend.api.langgraph.stream import resume_point, stream_modes
from main_backend.errors import InvalidRequest
from main_backend.events.fold import MessageState, ThreadState
from main_backend.events.types import MessageRole

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def thread() -> ThreadState:
    return ThreadState(
        thread_id="t1",
        owner="me",
        title=None,
        metadata={},
        system_prompt=None,
        forked_from=None,
        created_at=T0,
        updated_at=T0,
        version=5,
        message_count=4,
        active_run_id=None,
        deleted=False,
    )


def path(*roles: MessageRole) -> list[MessageState]:
    made: list[MessageState] = []
    for i, role in enumerate(roles):
        made.append(
            MessageState(
                message_id=f"m{i}",
                thread_id="t1",
                version=i + 2,
                role=role,
                content=f"text {i}",
                run_id=None if role == "user" else f"r{i}",
                partial=False,
                created_at=T0 + timedelta(seconds=i + 1),
                parent_id=made[-1].message_id if made else None,
                active=True,
            )
        )
    return made


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ([{"type": "human", "content": "hi"}], [{"role": "user", "content": "hi"}]),
        ({"role": "user", "content": "hi"}, [{"role": "user", "content": "hi"}]),
        (["hi"], [{"role": "user", "content": "hi"}]),
        (
            [
                {"type": "system", "content": "be brief"},
                {"type": "ai", "content": "earlier"},
                {"type": "human", "content": [{"type": "text", "text": "a"}, "b"]},
            ],
            [
                {"role": "system", "content": "be brief"},
                {"role": "assistant", "content": "earlier"},
                {"role": "user", "content": "ab"},
            ],
        ),
        ([{"role": "developer", "content": "rules"}], [{"role": "system", "content": "rules"}]),
    ],
)
def test_input_messages_in_langchain_or_openai_form(given: object, expected: object) -> None:
    assert lg.chat_messages(given) == expected


@pytest.mark.parametrize(
    ("given", "field"),
    [
        (None, "input.messages"),
        ([], "input.messages"),
        ("hi", "input.messages"),
        ([{"type": "tool", "content": "x"}], "input.messages[0]"),
        ([{"content": "x"}], "input.messages[0]"),
        ([{"type": "human"}], "input.messages[0].content"),
        ([{"type": "human", "content": 3}], "input.messages[0].content"),
        ([{"type": "human", "content": [{"type": "image_url", "image_url": "x"}]}], None),
        ([{"type": "human", "content": [{"type": "text", "text": 1}]}], None),
        (["ok", 7], "input.messages[1]"),
    ],
)
def test_input_that_is_no_chat_message_is_refused_naming_where(
    given: object, field: str | None
) -> None:
    with pytest.raises(InvalidRequest) as refused:
        lg.chat_messages(given)
    assert refused.value.field == (field or "input.messages[0].content[0]")


def test_a_state_ending_with_a_question_waits_for_the_chat_node() -> None:
    messages = path("user", "assistant", "user")
    waiting = lg.state(thread(), messages)
    assert waiting["next"] == ["chat"] and [t["name"] for t in waiting["tasks"]] == ["chat"]
    assert waiting["checkpoint"] == {"thread_id": "t1", "checkpoint_ns": "", "checkpoint_id": "m2"}
    assert waiting["parent_checkpoint"]["checkpoint_id"] == "m1"
    assert [m["type"] for m in waiting["values"]["messages"]] == ["human", "ai", "human"]
    assert waiting["created_at"] == messages[-1].created_at.isoformat()
    answered = lg.state(thread(), messages[:2])
    assert answered["next"] == [] and answered["tasks"] == []
    assert answered["metadata"]["run_id"] == "r1" and answered["metadata"]["step"] == 1
    empty = lg.state(thread(), [])
    assert empty["values"] == {"messages": []} and empty["parent_checkpoint"] is None
    assert empty["checkpoint"]["checkpoint_id"] == lg.empty_checkpoint_id("t1")
    assert lg.empty_checkpoint_id("t1") != lg.empty_checkpoint_id("t2")


def test_history_runs_newest_first_each_parent_the_next_state() -> None:
    messages = path("user", "assistant", "user", "assistant")
    states = lg.history(thread(), messages, 10, None)
    ids = [s["checkpoint"]["checkpoint_id"] for s in states]
    assert ids == ["m3", "m2", "m1", "m0", lg.empty_checkpoint_id("t1")]
    for newer, older in pairwise(states):
        assert newer["parent_checkpoint"] == older["checkpoint"]
    assert [len(s["values"]["messages"]) for s in states] == [4, 3, 2, 1, 0]
    page = lg.history(thread(), messages, 2, None)
    assert [s["checkpoint"]["checkpoint_id"] for s in page] == ["m3", "m2"]
    rest = lg.history(thread(), messages, 2, "m2")
    assert [s["checkpoint"]["checkpoint_id"] for s in rest] == ["m1", "m0"]
    last = lg.history(thread(), messages, 10, "m0")
    assert [s["checkpoint"]["checkpoint_id"] for s in last] == [lg.empty_checkpoint_id("t1")]
    assert lg.history(thread(), messages, 10, lg.empty_checkpoint_id("t1")) == []
    assert lg.history(thread(), messages, 10, "not-on-this-path") == []


def test_a_partial_answer_says_it_was_cut_short() -> None:
    cut = path("user", "assistant")[1]
    shaped: dict[str, Any] = lg.lc_message(replace(cut, partial=True))
    assert shaped["response_metadata"] == {"finish_reason": "cancelled"}
    assert shaped["tool_calls"] == [] and shaped["type"] == "ai"


def test_stream_modes_are_the_ones_the_chat_graph_has() -> None:
    assert stream_modes(None) == {"values"}
    assert stream_modes("updates") == {"updates"}
    assert stream_modes(["values", "messages-tuple", "custom"]) == {
        "values",
        "messages-tuple",
        "custom",
    }
    for refused, reason in [
        ("messages", "messages-tuple"),
        ("events", "callback"),
        ("x", "supported: values"),
    ]:
        with pytest.raises(InvalidRequest, match=reason) as error:
            stream_modes(["values", refused])
        assert error.value.field == "stream_mode"


@pytest.mark.parametrize(
    ("last_event_id", "expected"),
    [
        (None, (None, 0, True)),
        ("", (None, 0, True)),
        ("-1", (None, 0, True)),
        ("start", ("start", 0, False)),
        ("2-40", ("2-40", 0, False)),
        ("end", ("end", 0, False)),
        ("1-17|0", ("1-17", 1, False)),
        ("|1", (None, 2, False)),
        ("nonsense", ("nonsense", 0, False)),
    ],
)
def test_where_a_client_resumes_after_an_event_id(
    last_event_id: str | None, expected: tuple[str | None, int, bool]
) -> None:
    assert resume_point(last_event_id) == expected
