"""A run's stream with ids that are the same on every connection and every replica.

Ids (opaque to clients, but built so that any replica can resume after one):

- `queued`: `run.queued`, first for a run that waited in its thread's queue;
- `start`: `run.started`;
- `<attempt>-<offset>`: a `delta` whose text ends at `offset` characters of the
  answer that the run's `attempt`-th generation writes, and `run.restarted`
  (offset 0) when a take-over generates the answer again;
- `end`: the terminal event (`run.completed`, `run.failed`, `run.cancelled`).

So "what comes after an id" is a question the database answers on any replica:
the rest of the partial answer saved in `run_progress` (progress.py) while the run
goes on, the rest of the stored answer once it has ended. Deltas may be cut
differently on different connections; their text joined is the same.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass

from main_backend.conversation.graph import (
    RunDelta,
    RunEnded,
    RunStarted,
    ended_from_events,
    recorded_inputs,
    terminal_events,
)
from main_backend.conversation.ids import run_queued_id, run_started_id, terminal_event_id
from main_backend.conversation.progress import RunProgress
from main_backend.conversation.runs import owned_run
from main_backend.errors import InvalidRequest, RunNotFound
from main_backend.events.store import EventStore
from main_backend.events.types import StoredEvent

QUEUED_ID = "queued"
START_ID = "start"
END_ID = "end"
_DELTA_ID = re.compile(r"([1-9][0-9]{0,8})-(0|[1-9][0-9]{0,11})")


@dataclass(frozen=True, slots=True)
class RunQueued:
    """The run waits in its thread's queue; `run.started` follows when its turn comes."""

    thread_id: str
    run_id: str


@dataclass(frozen=True, slots=True)
class RunRestarted:
    """The answer starts again: a take-over generates it anew as `attempt`."""

    attempt: int


StreamEvent = RunQueued | RunStarted | RunDelta | RunRestarted | RunEnded


@dataclass(frozen=True, slots=True)
class Sent:
    """An event of a run's stream and its id."""

    id: str
    event: StreamEvent


@dataclass(frozen=True, slots=True)
class Cursor:
    """Where a client is in a run's stream: after `run.started` it has seen
    `offset` characters of `attempt`'s answer (None: of no attempt yet)."""

    started: bool = False
    attempt: int | None = None
    offset: int = 0
    ended: bool = False
    queued: bool = False


def delta_id(attempt: int, offset: int) -> str:
    return f"{attempt}-{offset}"


def parse_event_id(event_id: str | None) -> Cursor:
    """The cursor after the event with this id (None: before the first event)."""
    if event_id is None:
        return Cursor()
    if event_id == QUEUED_ID:
        return Cursor(queued=True)
    if event_id == START_ID:
        return Cursor(started=True)
    if event_id == END_ID:
        return Cursor(started=True, ended=True)
    match = _DELTA_ID.fullmatch(event_id)
    if match is None:
        raise InvalidRequest(
            "Last-Event-ID must be an id this stream sent: queued, start, end or "
            "<attempt>-<offset>",
            "Last-Event-ID",
        )
    return Cursor(True, int(match[1]), int(match[2]))


async def with_ids(events: AsyncIterator[StreamEvent], attempt: int) -> AsyncIterator[Sent]:
    """The events of one attempt as its driving replica relays them, with their ids."""
    offset = 0
    async for event in events:
        if isinstance(event, RunQueued):
            yield Sent(QUEUED_ID, event)
        elif isinstance(event, RunStarted):
            yield Sent(START_ID, event)
        elif isinstance(event, RunDelta):
            offset += len(event.text)
            yield Sent(delta_id(attempt, offset), event)
        elif isinstance(event, RunRestarted):
            attempt, offset = event.attempt, 0
            yield Sent(delta_id(attempt, 0), event)
        else:
            yield Sent(END_ID, event)


def answer_text(ended: RunEnded) -> str:
    """The answer that a run's deltas add up to, from its recorded end."""
    if ended.message is not None:
        return ended.message.content
    return ended.partial_content


class RunStreams:
    """Joining a run's stream on any replica, from the database."""

    def __init__(self, store: EventStore, progress: RunProgress, poll_seconds: float) -> None:
        self.store = store
        self.progress = progress
        self.poll_seconds = poll_seconds

    async def open(
        self, user: str, thread_id: str, run_id: str, last_event_id: str | None
    ) -> AsyncIterator[Sent]:
        """Check everything a client can get wrong, then return the stream; raises
        before the first byte is sent (unknown run, bad Last-Event-ID)."""
        cursor = parse_event_id(last_event_id)
        # Another user's run is not found, like one that never was (as on the run routes).
        await owned_run(self.store, user, thread_id, run_id)
        started = await self.store.get_event(run_started_id(run_id))
        if started is None and await self.store.get_event(run_queued_id(run_id)) is None:
            raise RunNotFound(thread_id, run_id)
        if started is not None and started.thread_id != thread_id:
            raise RunNotFound(thread_id, run_id)
        return self._follow(thread_id, run_id, started, cursor)

    async def wait_ended(self, thread_id: str, run_id: str) -> RunEnded:
        """The run's end, once the log has it (whichever replica drives the run)."""
        while True:
            stored = await terminal_events(self.store, thread_id, run_id)
            if stored:
                return ended_from_events(stored, None)
            await asyncio.sleep(self.poll_seconds)

    async def _follow(
        self, thread_id: str, run_id: str, started: StoredEvent | None, cursor: Cursor
    ) -> AsyncIterator[Sent]:
        if cursor.ended:
            return
        if not cursor.started:
            if started is None:  # queued: wait for its turn
                if not cursor.queued:
                    yield Sent(QUEUED_ID, RunQueued(thread_id, run_id))
                started = await self._wait_start(run_id)
            if started is not None:
                inputs = await recorded_inputs(self.store, run_id)
                yield Sent(START_ID, RunStarted(thread_id, run_id, started.version, inputs))
        attempt, offset = cursor.attempt, cursor.offset
        while True:
            stored = await terminal_events(self.store, thread_id, run_id)
            if stored:
                ended = ended_from_events(stored, None)
                text = answer_text(ended)
                final = await self.progress.attempt(run_id)
                # Another attempt's text, or more than the answer has: not a prefix of it.
                if attempt is not None and (attempt != final or offset > len(text)):
                    yield Sent(delta_id(final, 0), RunRestarted(final))
                    offset = 0
                if len(text) > offset:
                    yield Sent(delta_id(final, len(text)), RunDelta(text[offset:]))
                yield Sent(END_ID, ended)
                return
            progress = await self.progress.get(run_id)
            if progress is not None:
                if attempt is not None and progress.attempt != attempt:
                    yield Sent(delta_id(progress.attempt, 0), RunRestarted(progress.attempt))
                    offset = 0
                attempt = progress.attempt
                # A client that came from the driving replica may be ahead of the
                # last save: it waits until the saved text passes its offset.
                if len(progress.text) > offset:
                    yield Sent(
                        delta_id(attempt, len(progress.text)),
                        RunDelta(progress.text[offset:]),
                    )
                    offset = len(progress.text)
            await asyncio.sleep(self.poll_seconds)

    async def _wait_start(self, run_id: str) -> StoredEvent | None:
        """A queued run's `run.started` once it is appended; None if the run ended first
        (cancelled while queued)."""
        while (started := await self.store.get_event(run_started_id(run_id))) is None:
            if await self.store.get_event(terminal_event_id(run_id)) is not None:
                return None
            await asyncio.sleep(self.poll_seconds)
        return started
