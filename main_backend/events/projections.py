"""The read models (`threads`, `messages`, `runs`): stored results of the fold.

`save` keeps them current inside each append's transaction; `rebuild`
recomputes them from the log; `verify` compares them with a fresh fold.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Collection, Mapping
from dataclasses import dataclass, field, fields
from datetime import datetime
from typing import Any

import sqlalchemy as sa
from loguru import logger
from sqlalchemy.ext.asyncio import AsyncConnection

from main_backend.db import Database
from main_backend.errors import InvalidEvent
from main_backend.events.fold import (
    MessageState,
    RunState,
    ThreadState,
    fold,
    fold_runs,
    path_ids,
)
from main_backend.events.tables import events as events_table
from main_backend.events.tables import exclude_appends
from main_backend.events.tables import messages as messages_table
from main_backend.events.tables import runs as runs_table
from main_backend.events.tables import threads as threads_table
from main_backend.events.types import StoredEvent
from main_backend.values import sanitise
from stubichat_common.text import LONE_SURROGATE

# Rows per multi-row INSERT of a rebuild, and events per fetch of its read of the log.
_BATCH = 1000
_FETCH = 2000


def _fields(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in fields(cls))


# Rows are shallow copies (no `asdict`: its deep copy was most of a rebuild's time): a row
# is only handed to an INSERT or compared, never changed.
_THREAD_FIELDS = _fields(ThreadState)
_MESSAGE_FIELDS = tuple(f for f in _fields(MessageState) if f != "content")
_RUN_FIELDS = _fields(RunState)


def thread_row(state: ThreadState) -> dict[str, Any]:
    return {name: getattr(state, name) for name in _THREAD_FIELDS}


def thread_from_row(row: sa.Row[Any]) -> ThreadState:
    # Repaired like the log's rows: a read model written before the append checks
    # existed may hold what no response can carry (a lone surrogate in its metadata).
    return ThreadState(**sanitise(row._asdict(), f"the read model of thread {row.thread_id}"))


def message_row(message: MessageState) -> dict[str, Any]:
    """The read model's row of a message: all of it but its text, which its event holds."""
    return {name: getattr(message, name) for name in _MESSAGE_FIELDS}


def message_content() -> sa.ColumnElement[Any]:
    """What a message's text is read from: its `message.added` event's data, selected from
    `with_events(...)` (`message_from_row` takes the text out). The whole data, decoded by
    the driver as the log's reads decode it: SQLite's json_extract would hand back the
    escaped lone surrogate of a log written around the checks as bytes no driver decodes."""
    data: sa.ColumnElement[Any] = events_table.c.data
    return data.label("event_data")


def with_events(messages: sa.FromClause) -> sa.Join:
    """`messages` joined to their events: each message's is the event at its
    (thread_id, version) (the log's unique index), the `message.added` that added it."""
    return messages.join(
        events_table,
        sa.and_(
            events_table.c.thread_id == messages.c.thread_id,
            events_table.c.version == messages.c.version,
        ),
    )


def message_select() -> sa.Select[Any]:
    """Whole messages: the read model's columns and the text from their events."""
    return sa.select(messages_table, message_content()).select_from(with_events(messages_table))


def message_from_row(row: sa.Row[Any]) -> MessageState:
    """A message from a row of `message_select` (or any query adding its events' text)."""
    values = row._asdict()
    data = values.pop("event_data")
    text = data.get("content") if isinstance(data, dict) else None
    # (A row not made from a readable `message.added`, written around the checks, has none.)
    values["content"] = text if isinstance(text, str) else ""
    # Its values are flat (no JSON), so one search over its texts finds any repair to make:
    # a thread's thousands of messages are not walked value by value.
    if LONE_SURROGATE.search("".join(v for v in values.values() if isinstance(v, str))):
        values = sanitise(values, f"the read model of message {row.message_id}")
    return MessageState(**values)


def run_row(run: RunState) -> dict[str, Any]:
    return {name: getattr(run, name) for name in _RUN_FIELDS}


def run_from_row(row: sa.Row[Any]) -> RunState:
    return RunState(**sanitise(row._asdict(), f"the read model of run {row.run_id}"))


async def load_runs(
    conn: AsyncConnection, thread_id: str, run_ids: Collection[str]
) -> dict[str, RunState]:
    """The thread's runs among `run_ids`, by id."""
    if not run_ids:
        return {}
    query = sa.select(runs_table).where(
        runs_table.c.thread_id == thread_id, runs_table.c.run_id.in_(run_ids)
    )
    return {row.run_id: run_from_row(row) for row in await conn.execute(query)}


async def load_thread(
    conn: AsyncConnection, thread_id: str, owner: str | None = None, *, lock: bool = False
) -> ThreadState | None:
    """A thread's read model; with `owner`, only if it is theirs and not deleted. `lock`
    (an append's read, Postgres) locks its row until the transaction ends: FOR NO KEY
    UPDATE, which the append's own UPDATE needs anyway, and which lets the foreign keys
    of `messages` and `runs` on the row be checked meanwhile."""
    query = sa.select(threads_table).where(threads_table.c.thread_id == thread_id)
    if owner is not None:
        query = query.where(threads_table.c.owner == owner, threads_table.c.deleted.is_(False))
    if lock:
        query = query.with_for_update(key_share=True)
    row = (await conn.execute(query)).first()
    return None if row is None else thread_from_row(row)


async def save(
    conn: AsyncConnection,
    *,
    previous: ThreadState | None,
    state: ThreadState,
    messages: list[MessageState],
    runs: Mapping[str, RunState] | None = None,
    known_runs: Collection[str] = (),
    rolled_back: Collection[str] = (),
) -> None:
    """Write one append's effect on the read models (inside its transaction): `runs` are
    the runs it started or ended, `known_runs` the ids of those stored before it,
    `rolled_back` the messages it takes out of the history."""
    if previous is None:
        await conn.execute(threads_table.insert(), [thread_row(state)])
    else:
        changes = {k: v for k, v in thread_row(state).items() if k != "thread_id"}
        await conn.execute(
            threads_table.update()
            .where(threads_table.c.thread_id == state.thread_id)
            .values(**changes)
        )
    if previous is not None and previous.head_id != state.head_id:
        # The new messages on the active path are marked already, as far as they reach;
        # only where the path then goes on elsewhere than the old leaf must it be redrawn.
        by_id = {m.message_id: m for m in messages}
        reached = path_ids(messages, state.head_id)
        beyond = by_id[reached[-1]].parent_id if reached else state.head_id
        if beyond != previous.head_id:
            await move_active_path(conn, state.thread_id, beyond)
    if messages:
        await conn.execute(messages_table.insert(), [message_row(m) for m in messages])
    if rolled_back:
        await conn.execute(
            messages_table.update()
            .where(
                messages_table.c.thread_id == state.thread_id,
                messages_table.c.message_id.in_(rolled_back),
            )
            .values(rolled_back=True)
        )
    for run in (runs or {}).values():
        if run.run_id in known_runs:
            await conn.execute(
                runs_table.update()
                .where(runs_table.c.thread_id == run.thread_id, runs_table.c.run_id == run.run_id)
                .values(**run_row(run))
            )
        else:
            await conn.execute(runs_table.insert(), [run_row(run)])


async def move_active_path(conn: AsyncConnection, thread_id: str, leaf_id: str | None) -> None:
    """Mark the path root → `leaf_id` as the thread's active one (a stored message, or
    None for an empty path), touching only the messages whose mark changes: walk up from
    the leaf to the first message on the old path, then unmark the old path below it."""
    m = messages_table.c
    fork_version = 0
    if leaf_id is not None:
        up = (
            sa.select(m.message_id, m.thread_id, m.parent_id, m.version, m.active)
            .where(m.message_id == leaf_id)
            .cte("up", recursive=True)
        )
        parent = messages_table.alias("parent")
        # By primary key alone, as `EventStore.iter_path` walks (see there).
        up = up.union(
            sa.select(
                parent.c.message_id,
                parent.c.thread_id,
                parent.c.parent_id,
                parent.c.version,
                parent.c.active,
            ).where(
                parent.c.message_id == up.c.parent_id,
                up.c.thread_id == thread_id,
                up.c.active.is_(False),
            )
        )
        walked = (
            await conn.execute(
                sa.select(up.c.message_id, up.c.version, up.c.active).where(
                    up.c.thread_id == thread_id
                )
            )
        ).all()
        fork_version = max((row.version for row in walked if row.active), default=0)
        joining = [row.message_id for row in walked if not row.active]
    else:
        joining = []
    await conn.execute(
        messages_table.update()
        .where(m.thread_id == thread_id, m.active.is_(True), m.version > fork_version)
        .values(active=False)
    )
    if joining:
        await conn.execute(
            messages_table.update()
            .where(m.thread_id == thread_id, m.message_id.in_(joining))
            .values(active=True)
        )


async def load_messages(
    conn: AsyncConnection, thread_id: str, to_version: int
) -> list[MessageState]:
    """Every message of the thread's read model (every branch, rolled-back ones too) up to
    `to_version`, oldest first."""
    m = messages_table.c
    query = (
        message_select()
        .where(m.thread_id == thread_id, m.version <= to_version)
        .order_by(m.version)
    )
    return [message_from_row(row) for row in await conn.execute(query)]


async def read_for_fold(
    conn: AsyncConnection, thread_id: str, to_version: int
) -> list[StoredEvent]:
    """The thread's events up to `to_version`, as the fold reads them (`_fold_input`)."""
    query = _fold_query().where(
        events_table.c.thread_id == thread_id, events_table.c.version <= to_version
    )
    return [_fold_input(row) for row in await conn.execute(query)]


def _fold_query() -> sa.Select[Any]:
    """Events in (thread, version) order, with only what the fold reads: not their
    metadata (request ids, users), which nothing folds."""
    e = events_table.c
    query = sa.select(e.position, e.event_id, e.thread_id, e.version, e.type, e.data, e.recorded_at)
    return query.order_by(e.thread_id, e.version)


@dataclass(frozen=True, slots=True)
class _Folded:
    """One thread folded from its log: no state (nor runs) when it cannot be folded."""

    state: ThreadState | None
    messages: list[MessageState]
    runs: list[RunState]
    events: int


async def _folded_threads(conn: AsyncConnection) -> AsyncIterator[_Folded]:
    """Every thread folded from the log, one at a time: the log read in one ordered pass,
    `_FETCH` rows per fetch (not a round trip per row)."""
    query = _fold_query().execution_options(yield_per=_FETCH)
    current: list[StoredEvent] = []
    result = await conn.stream(query)
    async for rows in result.partitions():
        for row in rows:
            event = _fold_input(row)
            if current and current[0].thread_id != event.thread_id:
                yield _fold_or_skip(current)
                current = []
            current.append(event)
    if current:
        yield _fold_or_skip(current)


def _clean_flat(data: Any) -> bool:
    """True for an object of scalars and no text to repair (a `message.added`'s, most of
    a log): one search over its texts instead of `sanitise`'s walk. False: walk it."""
    if type(data) is not dict:
        return False
    texts = []
    for key, value in data.items():
        texts.append(key)
        if isinstance(value, str):
            texts.append(value)
        elif value is not None and not isinstance(value, bool | int | float):
            return False
    return LONE_SURROGATE.search("".join(texts)) is None


def _fold_input(row: Any) -> StoredEvent:
    """A stored event as the fold reads it: its data repaired as `event_from_row` repairs
    it (a string that cannot be served, JSON that is not an object), no metadata."""
    data = row.data
    # (`where` built only for a repair: a rebuild reads every event of the log.)
    if not _clean_flat(data):
        data = sanitise(data, "the data of an event being folded")
    if data is not row.data:
        logger.warning("(that event is at position {})", row.position)
    if not isinstance(data, dict):
        logger.warning(
            'the data of the event at position {} is not an object; folded as {{"value": ...}}',
            row.position,
        )
        data = {"value": data}
    return StoredEvent(
        position=row.position,
        event_id=row.event_id,
        thread_id=row.thread_id,
        version=row.version,
        type=row.type,
        data=data,
        metadata={},
        recorded_at=row.recorded_at,
    )


def _fold_or_skip(events: list[StoredEvent]) -> _Folded:
    """A thread whose log does not start or go on as a thread's must (written around the
    append checks) gets no read model; every other thread is still rebuilt and verified."""
    try:
        state, messages = fold(events)
    except InvalidEvent as exc:
        logger.error(
            "thread {} cannot be folded from its log and is left out: {}", events[0].thread_id, exc
        )
        return _Folded(None, [], [], len(events))
    return _Folded(state, messages, list(fold_runs(events).values()), len(events))


@dataclass(frozen=True)
class RebuildReport:
    events: int
    threads: int
    messages: int
    runs: int
    duration_ms: float


async def rebuild(db: Database) -> RebuildReport:
    """Replace the read models by a fold of the whole log, in one transaction."""
    started = time.perf_counter()
    counts = {"events": 0, "threads": 0, "messages": 0, "runs": 0}
    async with db.writer.begin() as conn:
        await exclude_appends(conn)
        await conn.execute(runs_table.delete())
        await conn.execute(messages_table.delete())
        await conn.execute(threads_table.delete())
        thread_rows: list[dict[str, Any]] = []
        message_rows: list[dict[str, Any]] = []
        run_rows: list[dict[str, Any]] = []

        async def flush() -> None:
            # Threads first: messages and runs refer to them.
            for table, rows in (
                (threads_table, thread_rows),
                (messages_table, message_rows),
                (runs_table, run_rows),
            ):
                if rows:
                    await conn.execute(table.insert(), rows)
                    rows.clear()

        async for folded in _folded_threads(conn):
            counts["events"] += folded.events
            if folded.state is None:
                continue
            thread_rows.append(thread_row(folded.state))
            message_rows.extend(message_row(m) for m in folded.messages)
            run_rows.extend(run_row(r) for r in folded.runs)
            counts["threads"] += 1
            counts["messages"] += len(folded.messages)
            counts["runs"] += len(folded.runs)
            if max(len(thread_rows), len(message_rows), len(run_rows)) >= _BATCH:
                await flush()
        await flush()
    return RebuildReport(**counts, duration_ms=round((time.perf_counter() - started) * 1000, 1))


@dataclass(frozen=True)
class VerifyReport:
    ok: bool
    mismatches: list[dict[str, Any]] = field(default_factory=list)


def _jsonable(value: Any) -> Any:
    return value.isoformat() if isinstance(value, datetime) else value


def _diff(
    kind: str, key: dict[str, Any], expected: dict[str, Any], actual: dict[str, Any] | None
) -> list[dict[str, Any]]:
    if actual is None:
        return [{"kind": f"missing_{kind}", **key}]
    return [
        {
            "kind": kind,
            **key,
            "field": name,
            "expected": _jsonable(expected[name]),
            "actual": _jsonable(actual.get(name)),
        }
        for name in expected
        if expected[name] != actual.get(name)
    ]


async def verify(db: Database) -> VerifyReport:
    """Compare the read models with a fresh fold of the log."""
    mismatches: list[dict[str, Any]] = []
    async with db.engine.connect() as conn:
        stored_threads = {
            row.thread_id: thread_row(thread_from_row(row))
            for row in await conn.execute(sa.select(threads_table))
        }
        async for folded in _folded_threads(conn):
            state = folded.state
            if state is None:
                continue
            key = {"thread_id": state.thread_id}
            mismatches += _diff(
                "thread", key, thread_row(state), stored_threads.pop(state.thread_id, None)
            )
            stored_messages = {
                row.message_id: message_row(message_from_row(row))
                for row in await conn.execute(
                    message_select().where(messages_table.c.thread_id == state.thread_id)
                )
            }
            for message in folded.messages:
                mismatches += _diff(
                    "message",
                    {**key, "message_id": message.message_id},
                    message_row(message),
                    stored_messages.pop(message.message_id, None),
                )
            mismatches += [
                {"kind": "extra_message", **key, "message_id": message_id}
                for message_id in stored_messages
            ]
            stored_runs = {
                row.run_id: run_row(run_from_row(row))
                for row in await conn.execute(
                    sa.select(runs_table).where(runs_table.c.thread_id == state.thread_id)
                )
            }
            for run in folded.runs:
                mismatches += _diff(
                    "run",
                    {**key, "run_id": run.run_id},
                    run_row(run),
                    stored_runs.pop(run.run_id, None),
                )
            mismatches += [{"kind": "extra_run", **key, "run_id": run_id} for run_id in stored_runs]
        mismatches += [{"kind": "extra_thread", "thread_id": t} for t in stored_threads]
    return VerifyReport(ok=not mismatches, mismatches=mismatches)
