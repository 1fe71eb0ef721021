"""Run stream ids: what `Last-Event-ID` means, and the ids the driving replica gives."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from main_backend.conversation.graph import RunDelta, RunEnded, RunStarted
from main_backend.conversation.streams import (
    Cursor,
    RunRestarted,
    StreamEvent,
    parse_event_id,
    with_ids,
)
from main_backend.errors import InvalidRequest


@pytest.mark.parametrize(
    ("event_id", "cursor"),
    [
        (None, Cursor()),
        ("start", Cursor(started=True)),
        ("1-0", Cursor(True, 1, 0)),
        ("3-1234", Cursor(True, 3, 1234)),
        ("end", Cursor(started=True, ended=True)),
    ],
)
def test_an_id_is_where_the_client_is(event_id: str | None, cursor: Cursor) -> None:
    assert parse_event_id(event_id) == cursor


@pytest.mark.parametrize("event_id", ["", "7", "0-1", "1-01", "1--2", "a-1", " 1-2", "1-2\n"])
def test_an_id_this_stream_never_sent_is_refused(event_id: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        parse_event_id(event_id)
    assert refused.value.field == "Last-Event-ID"


async def test_delta_ids_are_offsets_into_the_attempt_s_answer() -> None:
    ended = RunEnded("completed", "t", "r", 5, "m")

    async def events() -> AsyncIterator[StreamEvent]:
        for event in (
            RunStarted("t", "r", 3, []),
            RunDelta("Héllo"),
            RunDelta(", "),
            RunRestarted(3),
            RunDelta("Hi"),
            ended,
        ):
            yield event

    ids = [sent.id async for sent in with_ids(events(), 2)]
    assert ids == ["start", "2-5", "2-7", "3-0", "3-2", "end"]
