"""What may be stored (checked before appending) and how stored values are served (repaired),
and the fold's tolerance of events that do not hold what their type needs."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pytest

from main_backend.errors import InvalidEvent
from main_backend.events.fold import fold, readable_message
from main_backend.events.types import (
    MESSAGE_ADDED,
    RUN_STARTED,
    THREAD_CREATED,
    THREAD_UPDATED,
    NewEvent,
    StoredEvent,
    check_new_events,
)
from main_backend.values import (
    METADATA_MAX_BYTES,
    METADATA_MAX_DEPTH,
    READ_MAX_DEPTH,
    TOO_DEEP,
    ValueProblem,
    check_json,
    check_text,
    sanitise,
)
from tests.support.events import message_added, thread_created


def deep(depth: int) -> Any:
    value: Any = "leaf"
    for _ in range(depth):
        value = {"k": value}
    return value


@pytest.mark.parametrize(
    ("text", "ok"),
    [
        ("plain", True),
        ("emoji \U0001f600 中文 é", True),
        ("", True),
        ("\ud800", False),
        ("a\udfffb", False),
        ("\ud83d\ude00", False),  # a pair of surrogate code points is still not text
        ("nul\x00", False),
    ],
)
def test_text_must_be_unicode_scalar_values_without_nul(text: str, ok: bool) -> None:
    if ok:
        assert check_text(text, ["f"]) == text
    else:
        with pytest.raises(ValueProblem) as refused:
            check_text(text, ["f"])
        assert refused.value.field == "f"


def test_json_problems_name_where_they_are() -> None:
    with pytest.raises(ValueProblem) as refused:
        check_json({"a": [1, {"b": "\ud800"}]}, ["metadata"], max_depth=METADATA_MAX_DEPTH)
    assert refused.value.field == "metadata.a.1.b"
    with pytest.raises(ValueProblem) as refused:
        check_json({"ok": {"\x00": 1}}, ["metadata"], max_depth=METADATA_MAX_DEPTH)
    assert refused.value.field == "metadata.ok"  # a bad key is not repeated in the error
    with pytest.raises(ValueProblem) as refused:
        check_json(deep(METADATA_MAX_DEPTH + 1), ["metadata"], max_depth=METADATA_MAX_DEPTH)
    assert refused.value.field == "metadata"
    check_json(deep(METADATA_MAX_DEPTH), ["metadata"], max_depth=METADATA_MAX_DEPTH)
    big = {"k": "x" * METADATA_MAX_BYTES}
    with pytest.raises(ValueProblem, match="bytes"):
        check_json(big, ["metadata"], max_depth=2, max_bytes=METADATA_MAX_BYTES)
    # Bytes, not characters: multi-byte text counts as what it stores.
    with pytest.raises(ValueProblem):
        check_json(
            {"k": "é" * (METADATA_MAX_BYTES // 2)}, [], max_depth=2, max_bytes=METADATA_MAX_BYTES
        )


def test_sanitise_repairs_only_what_cannot_be_served() -> None:
    clean = {"a": ["b", 1, None, {"c": "\U0001f600"}]}
    assert sanitise(clean) is clean
    repaired = sanitise({"a": ["x\ud800y"], "\udc00": 1, "n": 2})
    assert repaired == {"a": ["x\ufffdy"], "\ufffd": 1, "n": 2}
    json.dumps(repaired, ensure_ascii=False).encode()
    cut = sanitise(deep(300))
    text = json.dumps(cut)
    assert TOO_DEEP in text and text.count("{") == READ_MAX_DEPTH


T0 = datetime(2026, 11, 25, tzinfo=UTC)


def stored(events: list[tuple[str, dict[str, Any]]]) -> list[StoredEvent]:
    return [
        StoredEvent(
            position=i,
            event_id=f"e{i}",
            thread_id="t",
            version=i,
            type=type_,
            data=data,
            metadata={},
            recorded_at=T0,
        )
        for i, (type_, data) in enumerate(events, start=1)
    ]


def test_the_fold_skips_events_it_cannot_read_and_goes_on() -> None:
    created = thread_created(owner="u")
    good = message_added("still here")
    state, messages = fold(
        stored(
            [
                (created.type, created.data),
                (
                    MESSAGE_ADDED,
                    {"message_id": "m", "role": "user", "run_id": None, "partial": False},
                ),
                (
                    MESSAGE_ADDED,
                    {
                        "message_id": "m2",
                        "role": "user",
                        "content": 5,
                        "run_id": None,
                        "partial": False,
                    },
                ),
                (RUN_STARTED, {"model": "no run id"}),
                (THREAD_UPDATED, {"metadata": [1, 2]}),
                (THREAD_UPDATED, {"title": 7}),
                ("thread.renamed", {"title": "unknown"}),
                (good.type, good.data),
                (THREAD_UPDATED, {"title": "renamed"}),
            ]
        )
    )
    assert state is not None
    assert (state.version, state.message_count, state.active_run_id) == (9, 1, None)
    assert (state.title, state.metadata) == ("renamed", {})
    assert [m.content for m in messages] == ["still here"]


def test_a_thread_that_does_not_start_as_one_is_not_folded() -> None:
    with pytest.raises(InvalidEvent):
        fold(stored([(THREAD_CREATED, {"title": "no owner"})]))
    assert readable_message(stored([(MESSAGE_ADDED, {"content": "no id"})])[0]) is None


@pytest.mark.parametrize(
    ("data", "metadata", "field"),
    [
        ({"title": "\ud800"}, {}, "title"),
        ({"metadata": {"k": "\udc00"}}, {}, "metadata.k"),
        ({"metadata": deep(METADATA_MAX_DEPTH + 1)}, {}, "metadata"),
        ({"metadata": {"k": "x" * METADATA_MAX_BYTES}}, {}, "metadata"),
        ({"metadata": []}, {}, "metadata"),
        ({"title": 5}, {}, "title"),
        ({}, {"user": "\ud800"}, "event_metadata.user"),
    ],
)
def test_the_store_refuses_what_the_schemas_would_have(
    data: dict[str, Any], metadata: dict[str, Any], field: str
) -> None:
    with pytest.raises(InvalidEvent) as refused:
        check_new_events("t", [NewEvent(THREAD_UPDATED, data, metadata)], 1)
    assert refused.value.field == field
