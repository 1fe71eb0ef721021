"""Parsing server-sent events in tests, and the helpers of run streams."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

TERMINAL_EVENTS = frozenset({"run.completed", "run.failed", "run.cancelled"})


@dataclass(frozen=True)
class Event:
    event: str
    data: Any
    id: str | None


def parse_sse(text: str) -> list[Event]:
    events = []
    for block in text.replace("\r\n", "\n").split("\n\n"):
        name, event_id, data_lines = "message", None, []
        for line in block.split("\n"):
            if line.startswith(":") or not line:
                continue
            field, _, value = line.partition(":")
            value = value[1:] if value.startswith(" ") else value
            if field == "event":
                name = value
            elif field == "id":
                event_id = value
            elif field == "data":
                data_lines.append(value)
        if data_lines:
            events.append(Event(name, json.loads("\n".join(data_lines)), event_id))
    return events


def iter_events(lines: Iterable[str]) -> Iterator[Event]:
    """Events as their lines arrive (`Response.iter_lines()`), not after the stream ended."""
    block: list[str] = []
    for line in lines:
        if line:
            block.append(line)
            continue
        if block:
            events = parse_sse("\n".join(block) + "\n\n")
            block = []
            yield from events
    if block:
        yield from parse_sse("\n".join(block))


def read_events(lines: Iterable[str], most: int | None = None) -> list[Event]:
    """The events as they arrive; stops after `most` of them (the caller may read on
    from the same `lines`, or close the stream: a client that drops it)."""
    events: list[Event] = []
    for event in iter_events(lines):
        events.append(event)
        if most is not None and len(events) >= most:
            break
    return events


def run_stream_path(thread_id: str, run_id: str) -> str:
    """Where a run's stream is joined or resumed (the `Location` of a chat response)."""
    return f"/threads/{thread_id}/runs/{run_id}/stream"


def delta_text(events: Iterable[Event]) -> str:
    """The text of a stream's `delta` events, joined."""
    return "".join(e.data["text"] for e in events if e.event == "delta")
