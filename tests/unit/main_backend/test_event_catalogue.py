"""The event catalogue: one payload type per event type, and the checks that follow it."""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, get_args, get_overloads, get_type_hints, is_typeddict

import pytest

from main_backend.errors import InvalidEvent
from main_backend.events import types
from main_backend.events.types import (
    MESSAGE_ADDED,
    PAYLOAD_TYPES,
    REQUIRED_FIELDS,
    RUN_COMPLETED,
    RUN_STARTED,
    MessageAddedData,
    NewEvent,
    RunCompletedData,
    RunStartedData,
    StoredEvent,
    check_new_events,
    new_event,
    read_data,
)


def event_type_constants() -> dict[str, str]:
    """Every constant of the module that names an event type ("thread.created"…)."""
    return {
        name: value
        for name, value in vars(types).items()
        if name.isupper() and isinstance(value, str) and re.fullmatch(r"[a-z]+\.[a-z_]+", value)
    }


def test_every_event_type_has_a_payload_type_and_every_payload_type_an_event_type() -> None:
    constants = event_type_constants()
    assert len(constants) == 11
    assert set(constants.values()) == set(PAYLOAD_TYPES)
    assert all(is_typeddict(payload) for payload in PAYLOAD_TYPES.values())
    assert len(set(PAYLOAD_TYPES.values())) == len(PAYLOAD_TYPES)


def test_new_event_takes_each_type_with_its_own_payload_type() -> None:
    overloads = {}
    for overload in get_overloads(new_event):
        hints = get_type_hints(overload, vars(types))
        (type_,) = get_args(hints["type_"])
        overloads[type_] = hints["data"]
    assert overloads == PAYLOAD_TYPES


def test_required_fields_are_the_catalogues() -> None:
    # Written out, so a payload type losing or gaining a required field is seen here.
    assert {
        "thread.created": {"owner", "title", "metadata", "forked_from"},
        "message.added": {"message_id", "role", "content", "run_id", "partial"},
        "run.started": {"run_id", "model", "params", "prompt_version"},
        "run.completed": {
            "run_id",
            "message_id",
            "finish_reason",
            "usage",
            "latency_ms",
            "ttft_ms",
        },
        "run.failed": {"run_id", "error", "partial_content"},
        "run.cancelled": {"run_id"},
        "run.queued": {"run_id", "model", "params", "messages"},
        "run.rolled_back": {"run_id", "message_ids"},
        "thread.updated": set(),
        "thread.deleted": set(),
        "thread.head_moved": {"message_id"},
    } == REQUIRED_FIELDS


def stored(type_: str, data: Mapping[str, object]) -> StoredEvent:
    return StoredEvent(
        position=7,
        event_id="e1",
        thread_id="t1",
        version=2,
        type=type_,
        data=dict(data),
        metadata={},
        recorded_at=datetime(2026, 11, 25, tzinfo=UTC),
    )


MESSAGE: MessageAddedData = {
    "message_id": "m1",
    "role": "user",
    "content": "hi",
    "run_id": None,
    "partial": False,
}
COMPLETED: RunCompletedData = {
    "run_id": "r1",
    "message_id": "m2",
    "finish_reason": None,
    "usage": None,
    "latency_ms": 12,
    "ttft_ms": 3.5,
}
STARTED_WITH_BOOL_VERSION = {"run_id": "r1", "model": "m", "params": {}, "prompt_version": True}


def test_stored_data_that_holds_what_its_type_says_is_read_as_that_type() -> None:
    message: MessageAddedData = read_data(stored(MESSAGE_ADDED, MESSAGE), MessageAddedData)
    assert message == MESSAGE
    # An int is a float; a legacy event without "model" is still read.
    completed = read_data(stored(RUN_COMPLETED, COMPLETED), RunCompletedData)
    assert completed["latency_ms"] == 12
    assert "model" not in completed


@pytest.mark.parametrize(
    ("data", "field"),
    [
        ({**MESSAGE, "role": "tool"}, "role"),
        ({**MESSAGE, "content": 5}, "content"),
        ({**MESSAGE, "partial": 0}, "partial"),
        ({k: v for k, v in MESSAGE.items() if k != "run_id"}, "run_id"),
    ],
)
def test_stored_data_that_does_not_is_refused_naming_the_field(
    data: Mapping[str, object], field: str
) -> None:
    with pytest.raises(InvalidEvent, match=f"position 7\\) has no valid {field}$"):
        read_data(stored(MESSAGE_ADDED, data), MessageAddedData)


def test_an_event_is_not_read_as_another_types_payload() -> None:
    with pytest.raises(InvalidEvent, match="not a RunCompletedData"):
        read_data(stored(MESSAGE_ADDED, MESSAGE), RunCompletedData)


def test_only_the_named_fields_are_checked_when_names_are_given() -> None:
    odd = {**COMPLETED, "usage": "lots"}
    assert read_data(stored(RUN_COMPLETED, odd), RunCompletedData, "run_id")["run_id"] == "r1"
    with pytest.raises(InvalidEvent, match="no valid usage"):
        read_data(stored(RUN_COMPLETED, odd), RunCompletedData)


def test_the_append_checks_optional_fields_against_the_catalogue_too() -> None:
    wrong_model = NewEvent(RUN_COMPLETED, {**COMPLETED, "model": 4})
    with pytest.raises(InvalidEvent, match=r"run\.completed model is not of the type"):
        check_new_events("t1", [wrong_model], 3)
    check_new_events("t1", [new_event(RUN_COMPLETED, {**COMPLETED, "model": "gpt-4o"})], 3)


@pytest.mark.parametrize(
    ("type_", "data", "payload", "field"),
    [
        (RUN_COMPLETED, {**COMPLETED, "latency_ms": True}, RunCompletedData, "latency_ms"),
        (RUN_STARTED, STARTED_WITH_BOOL_VERSION, RunStartedData, "prompt_version"),
    ],
)
def test_a_bool_is_not_a_number_in_stored_data(
    type_: str, data: Mapping[str, object], payload: type[Any], field: str
) -> None:
    # JSON keeps true apart from 1; Python's bool is an int, so the check must too.
    with pytest.raises(InvalidEvent, match=f"has no valid {field}$"):
        read_data(stored(type_, data), payload)
