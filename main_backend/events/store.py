"""The append-only event store: the source of truth for every thread.

An append is one transaction: it checks the expected version, folds the new
events onto the thread's read model, inserts the events and writes the read
models. Appends are serialised — on SQLite by `BEGIN IMMEDIATE`, on Postgres
by a transaction-scoped advisory lock — so global positions commit in
increasing order and a reader of the feed never sees a gap fill in later.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from main_backend.db import Database
from main_backend.errors import EventIdConflict, VersionConflict
from main_backend.events import projections
from main_backend.events.fold import (
    MessageState,
    ThreadState,
    fold,
    fold_runs,
    readable_message,
    rolled_back_ids,
    run_id_of,
)
from main_backend.events.tables import event_from_row, lock_appends
from main_backend.events.tables import events as events_table
from main_backend.events.types import (
    MESSAGE_ADDED,
    RUN_ROLLED_BACK,
    NewEvent,
    StoredEvent,
    check_new_events,
)


@dataclass(frozen=True, slots=True)
class AppendResult:
    thread_id: str
    events: list[StoredEvent]
    # True when these events were stored by an earlier, identical append.
    replayed: bool = False

    @property
    def version(self) -> int:
        return self.events[-1].version


class EventStore:
    def __init__(
        self,
        db: Database,
        on_append: Callable[[int], None] | None = None,
        on_conflict: Callable[[], None] | None = None,
    ) -> None:
        self.db = db
        # Observers (metrics): events appended, and version conflicts refused.
        self.on_append = on_append
        self.on_conflict = on_conflict

    async def append(
        self, thread_id: str, new_events: Sequence[NewEvent], expected_version: int
    ) -> AppendResult:
        """Append all of `new_events` after `expected_version`, or nothing.

        Raises `VersionConflict` when the thread is elsewhere, `InvalidEvent`
        for events that must not be stored, and `EventIdConflict` when some
        of the event ids are stored already but not as this very append.
        Re-sending an append that was stored returns it with `replayed=True`.
        """
        batch = list(new_events)
        check_new_events(thread_id, batch, expected_version)
        recorded_at = datetime.now(UTC)
        async with self.db.writer.begin() as conn:
            await lock_appends(conn)
            current = await _current_version(conn, thread_id)
            if current != expected_version:
                stored = await _stored_as(conn, thread_id, batch, expected_version)
                if stored is None:
                    if self.on_conflict is not None:
                        self.on_conflict()
                    raise VersionConflict(thread_id, expected_version, current)
                return AppendResult(thread_id, stored, replayed=True)
            state = await projections.load_thread(conn, thread_id)
            pending = [
                StoredEvent(
                    position=0,
                    event_id=e.event_id,
                    thread_id=thread_id,
                    version=expected_version + i,
                    type=e.type,
                    data=e.data,
                    metadata=e.metadata,
                    recorded_at=recorded_at,
                )
                for i, e in enumerate(batch, start=1)
            ]
            new_state, new_messages = fold(pending, state)
            assert new_state is not None
            run_ids = {r for r in map(run_id_of, pending) if r is not None}
            known_runs = await projections.load_runs(conn, thread_id, run_ids)
            new_runs = fold_runs(pending, known_runs)
            try:
                result = await conn.execute(
                    events_table.insert().returning(
                        events_table.c.position, sort_by_parameter_order=True
                    ),
                    [_event_row(e) for e in pending],
                )
            except IntegrityError as exc:
                raise EventIdConflict(
                    f"an event id of this append is stored already elsewhere: {exc.orig}"
                ) from exc
            positions = result.scalars()
            stored = [replace(e, position=p) for e, p in zip(pending, positions, strict=True)]
            await projections.save(
                conn,
                previous=state,
                state=new_state,
                messages=new_messages,
                runs=new_runs,
                known_runs=known_runs.keys(),
                rolled_back=[i for e in pending for i in rolled_back_ids(e)],
            )
        if self.on_append is not None:
            self.on_append(len(stored))
        return AppendResult(thread_id, stored)

    async def current_version(self, thread_id: str) -> int:
        async with self.db.engine.connect() as conn:
            return await _current_version(conn, thread_id)

    async def get_thread(self, thread_id: str, owner: str | None = None) -> ThreadState | None:
        """The thread's read model (deleted ones included unless `owner` is given:
        then only that owner's live thread, checked in the same query)."""
        async with self.db.engine.connect() as conn:
            return await projections.load_thread(conn, thread_id, owner)

    async def get_event(self, event_id: str) -> StoredEvent | None:
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(events_table).where(events_table.c.event_id == event_id)
                )
            ).first()
        return None if row is None else event_from_row(row)

    async def read_thread(
        self,
        thread_id: str,
        from_version: int = 1,
        to_version: int | None = None,
        limit: int | None = None,
    ) -> list[StoredEvent]:
        """The thread's events from `from_version` up to `to_version`, oldest first."""
        query = (
            sa.select(events_table)
            .where(events_table.c.thread_id == thread_id, events_table.c.version >= from_version)
            .order_by(events_table.c.version)
        )
        if to_version is not None:
            query = query.where(events_table.c.version <= to_version)
        if limit is not None:
            query = query.limit(limit)
        async with self.db.engine.connect() as conn:
            return [event_from_row(row) for row in await conn.execute(query)]

    async def read_all(self, after_position: int = 0, limit: int = 500) -> list[StoredEvent]:
        """Every thread's events after `after_position`, in commit order."""
        query = (
            sa.select(events_table)
            .where(events_table.c.position > after_position)
            .order_by(events_table.c.position)
            .limit(limit)
        )
        async with self.db.engine.connect() as conn:
            return [event_from_row(row) for row in await conn.execute(query)]

    async def iter_messages_backwards(
        self, thread_id: str, up_to_version: int | None = None, window: int = 64
    ) -> AsyncIterator[MessageState]:
        """The thread's messages, newest first, read from the log a window at a time;
        those a `run.rolled_back` took out of the history are left out.

        Each query is bounded by a range of `window` versions, so its cost does
        not depend on the thread's length or on the planner's statistics; a
        caller that stops early (a prompt that is full) reads only the windows
        it used. A rollback comes after the messages it names, so reading
        newest first meets it before them.
        """
        gone: set[str] = set()
        upper = up_to_version
        while upper is None or upper >= 1:
            async with self.db.engine.connect() as conn:
                if upper is None:
                    upper = await _current_version(conn, thread_id)
                lower = max(1, upper - window + 1)
                rows = (
                    await conn.execute(
                        sa.select(events_table)
                        .where(
                            events_table.c.thread_id == thread_id,
                            events_table.c.version.between(lower, upper),
                            events_table.c.type.in_([MESSAGE_ADDED, RUN_ROLLED_BACK]),
                        )
                        .order_by(events_table.c.version.desc())
                    )
                ).all()
            for row in rows:
                event = event_from_row(row)
                if event.type == RUN_ROLLED_BACK:
                    gone.update(rolled_back_ids(event))
                    continue
                message = readable_message(event)
                if message is not None and message.message_id not in gone:
                    yield message
            upper = lower - 1


def _event_row(event: StoredEvent) -> dict[str, object]:
    return {
        "event_id": event.event_id,
        "thread_id": event.thread_id,
        "version": event.version,
        "type": event.type,
        "data": event.data,
        "metadata": event.metadata,
        "recorded_at": event.recorded_at,
    }


async def _current_version(conn: AsyncConnection, thread_id: str) -> int:
    query = sa.select(sa.func.max(events_table.c.version)).where(
        events_table.c.thread_id == thread_id
    )
    return (await conn.scalar(query)) or 0


async def _stored_as(
    conn: AsyncConnection, thread_id: str, batch: list[NewEvent], expected_version: int
) -> list[StoredEvent] | None:
    """The stored events if this exact append happened before; None if none of it did."""
    ids = [e.event_id for e in batch]
    rows = await conn.execute(sa.select(events_table).where(events_table.c.event_id.in_(ids)))
    found = {row.event_id: event_from_row(row) for row in rows}
    if not found:
        return None
    stored = [found.get(e.event_id) for e in batch]
    for i, (new, old) in enumerate(zip(batch, stored, strict=True), start=1):
        if (
            old is None
            or old.thread_id != thread_id
            or old.version != expected_version + i
            or old.type != new.type
            or old.data != new.data
        ):
            raise EventIdConflict(
                f"{len(found)} of the {len(batch)} events are stored already, but not as "
                f"this append (thread {thread_id}, after version {expected_version})"
            )
    return [e for e in stored if e is not None]
