"""The append-only event store: the source of truth for every thread.

An append is one transaction: it reads (and on Postgres locks) the thread's read
model, checks the expected version against it, folds the new events onto it,
inserts the events and writes the read models. SQLite serialises every writer
(`BEGIN IMMEDIATE`); Postgres serialises the appends of one thread by the lock on
its `threads` row, while appends to other threads go on at once. So positions
may commit out of order there: the feed (`read_all`) orders by the writing
transaction's id, then position, and serves only transactions that have ended.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Collection, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from loguru import logger
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
    rolled_back_ids,
    run_id_of,
)
from main_backend.events.tables import event_from_row
from main_backend.events.tables import events as events_table
from main_backend.events.tables import messages as messages_table
from main_backend.events.types import (
    NewEvent,
    StoredEvent,
    check_new_events,
)


class _Refused(Exception):
    """An append that cannot go on: the thread is at `current`, or (None) the insert broke
    the `error` of a unique constraint, which spoils its transaction."""

    def __init__(self, current: int | None, error: IntegrityError | None = None) -> None:
        super().__init__(current, error)
        self.current = current
        self.error = error

    @property
    def orig(self) -> object:
        return None if self.error is None else self.error.orig


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
        try:
            result = await self._append(thread_id, batch, expected_version)
        except _Refused as refused:
            # The thread is elsewhere (or another append took these versions or ids
            # first): a replay of this very append, or a conflict. Decided once the
            # transaction, and the thread's lock, are given up: stored events never change.
            result = await self._refused(thread_id, batch, expected_version, refused)
        if self.on_append is not None and not result.replayed:
            self.on_append(len(result.events))
        return result

    async def _append(
        self, thread_id: str, batch: list[NewEvent], expected_version: int
    ) -> AppendResult:
        recorded_at = datetime.now(UTC)
        async with self.db.writer.begin() as conn:
            # The read model's version is the log's (each append writes both in its
            # transaction): one read checks the version, gives the state to fold onto
            # and, on Postgres, locks the thread against its other appends until commit
            # (a row lock waited for returns the row as its holder committed it).
            state = await projections.load_thread(conn, thread_id, lock=True)
            if state is None and expected_version != 0:
                # Only the log knows a thread it holds without a read model (one whose
                # log cannot be folded): appended to as before, against the log.
                current = await _current_version(conn, thread_id)
            else:
                current = 0 if state is None else state.version
            if current != expected_version:
                raise _Refused(current)
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
                # Only where there was no thread row to lock (a thread created twice at
                # once) or an id is another event's: the constraint decides.
                raise _Refused(None, exc) from exc
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
        return AppendResult(thread_id, stored)

    async def _refused(
        self, thread_id: str, batch: list[NewEvent], expected_version: int, refused: _Refused
    ) -> AppendResult:
        """A replay of this append, or the conflict that refused it."""
        async with self.db.engine.connect() as conn:
            stored = await _stored_as(conn, thread_id, batch, expected_version)
            if stored is not None:
                return AppendResult(thread_id, stored, replayed=True)
            current = refused.current
            if current is None:
                current = await _current_version(conn, thread_id)
        if current != expected_version:
            self._conflict()
            raise VersionConflict(thread_id, expected_version, current)
        raise EventIdConflict(
            f"an event id of this append is stored already elsewhere: {refused.orig}"
        ) from refused.error

    def _conflict(self) -> None:
        if self.on_conflict is not None:
            self.on_conflict()

    async def current_version(self, thread_id: str) -> int:
        async with self.db.reader.connect() as conn:
            return await _current_version(conn, thread_id)

    async def get_thread(self, thread_id: str, owner: str | None = None) -> ThreadState | None:
        """The thread's read model (deleted ones included unless `owner` is given:
        then only that owner's live thread, checked in the same query)."""
        async with self.db.reader.connect() as conn:
            return await projections.load_thread(conn, thread_id, owner)

    async def get_event(self, event_id: str) -> StoredEvent | None:
        async with self.db.reader.connect() as conn:
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
        """Every thread's events after the one at `after_position`, in feed order: what a
        reader following the positions of the last events it got never misses nor reads
        twice, however late a transaction commits.

        SQLite commits positions in order (one writer at a time): the feed is position
        order. On Postgres, appends to different threads run at once, so a smaller
        position may commit after a larger one: the feed orders by (xid, position) — the
        writing transaction's id first — and holds back every transaction from the oldest
        one still in progress on (`pg_snapshot_xmin`), so no event can later appear before
        a cursor. The cursor is the feed place of the event at `after_position`; a
        position that names no event stands for the nearest event below it (none: the
        start of the feed).
        """
        e = events_table.c
        query = sa.select(events_table)
        if self.db.dialect == "postgresql":
            cursor_xid = (
                sa.select(sa.func.coalesce(e.xid, 0))
                .where(e.position <= after_position)
                .order_by(e.position.desc())
                .limit(1)
                .scalar_subquery()
            )
            cursor = sa.tuple_(sa.func.coalesce(cursor_xid, -1), after_position)
            query = query.where(
                e.xid < _FEED_HORIZON, sa.tuple_(e.xid, e.position) > cursor
            ).order_by(e.xid, e.position)
        else:
            query = query.where(e.position > after_position).order_by(e.position)
        async with self.db.engine.connect() as conn:
            return [event_from_row(row) for row in await conn.execute(query.limit(limit))]

    async def get_message(self, thread_id: str, message_id: str) -> MessageState | None:
        """One message of the thread (from the read model and its event), or None."""
        # By primary key alone (see `iter_path`), the thread checked after.
        query = projections.message_select().where(messages_table.c.message_id == message_id)
        async with self.db.engine.connect() as conn:
            row = (await conn.execute(query)).first()
        if row is None or row.thread_id != thread_id:
            return None
        return projections.message_from_row(row)

    async def newest_leaf(
        self, thread_id: str, message_id: str | None, skip: Collection[str] = ()
    ) -> str | None:
        """The newest message under `message_id` (itself if it has none; under None, in
        the whole thread): a leaf, since a child is always newer than its parent. Rolled-
        back messages and those in `skip`, and what hangs under them, are left out."""
        m = messages_table.c
        kept = [m.thread_id == thread_id, m.rolled_back.is_(False)]
        if skip:
            kept.append(m.message_id.not_in(skip))
        if message_id is None:
            query = sa.select(m.message_id).where(*kept).order_by(m.version.desc()).limit(1)
        else:
            # By ids alone, as `iter_path` walks (see there).
            down = (
                sa.select(m.message_id, m.thread_id, m.version)
                .where(m.message_id == message_id)
                .cte("down", recursive=True)
            )
            child = messages_table.alias("child")
            c = child.c
            # UNION: a message met again (parents in a cycle, written around the checks)
            # adds no row, so the walk ends.
            down = down.union(
                sa.select(c.message_id, c.thread_id, c.version).where(
                    c.parent_id == down.c.message_id,
                    down.c.thread_id == thread_id,
                    c.rolled_back.is_(False),
                    *([c.message_id.not_in(skip)] if skip else []),
                )
            )
            query = (
                sa.select(down.c.message_id)
                .where(down.c.thread_id == thread_id)
                .order_by(down.c.version.desc())
                .limit(1)
            )
        async with self.db.engine.connect() as conn:
            return await conn.scalar(query)

    async def iter_path(
        self, thread_id: str, leaf_id: str | None, window: int = 64
    ) -> AsyncIterator[MessageState]:
        """The path from `leaf_id` up to the thread's first message, leaf first, read from
        the messages' parent links a window at a time.

        Each query walks at most `window` parents (by primary key), so its cost depends
        neither on the thread's length nor on how many branches it has; a caller that
        stops early (a prompt that is full) reads only the windows it used.
        """
        m = messages_table.c
        current = leaf_id
        seen: set[str] = set()
        while current is not None:
            up = (
                sa.select(messages_table, sa.literal(0).label("depth"))
                .where(m.message_id == current)
                .cte("up", recursive=True)
            )
            parent = messages_table.alias("parent")
            # The parent by its primary key alone: with the thread in the join too, a
            # planner with stale statistics scans the thread's messages at every step.
            # A parent of another thread (written around the checks) ends the walk.
            up = up.union_all(
                sa.select(parent, (up.c.depth + 1).label("depth")).where(
                    parent.c.message_id == up.c.parent_id,
                    up.c.thread_id == thread_id,
                    up.c.depth < window - 1,
                )
            )
            # The texts joined in last, only for the messages the walk kept.
            query: sa.Select[Any] = (
                sa.select(*(up.c[c.name] for c in messages_table.c), projections.message_content())
                .select_from(projections.with_events(up))
                .where(up.c.thread_id == thread_id)
                .order_by(up.c.depth)
            )
            async with self.db.reader.connect() as conn:
                rows = (await conn.execute(query)).all()
            for row in rows:
                if row.message_id in seen:
                    # Parents in a cycle: only a hand-written log holds one.
                    logger.warning("the path of thread {} loops; cut there", thread_id)
                    return
                seen.add(row.message_id)
                yield projections.message_from_row(row)
            current = rows[-1].parent_id if len(rows) == window else None


# The feed's horizon: every transaction of this database below it has ended (committed or
# not) in the reading statement's snapshot, so no event below it can appear later. That
# is the snapshot's xmin, except that transactions positively seen in another database
# of the cluster (which cannot write here) are passed over: a long one elsewhere does not
# stall the feed. A transaction in the snapshot that pg_stat_activity no longer shows is
# counted (it may have ended after the snapshot was taken, its events unseen).
_FEED_HORIZON: sa.ColumnElement[int] = sa.literal_column(
    """(SELECT LEAST(
        pg_snapshot_xmax(s)::text::bigint,
        (SELECT min(x::text::bigint) FROM pg_snapshot_xip(s) AS x
         WHERE x::xid NOT IN (
            SELECT backend_xid FROM pg_stat_activity
            WHERE backend_xid IS NOT NULL AND datname IS DISTINCT FROM current_database())))
    FROM pg_current_snapshot() AS s)""",
    sa.BigInteger,
)


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
