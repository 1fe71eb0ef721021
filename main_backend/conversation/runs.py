"""Runs as their thread's owner sees them: listed newest first, read one by one."""

from __future__ import annotations

from collections.abc import Collection

import sqlalchemy as sa

from main_backend.conversation.graph import recorded_inputs
from main_backend.conversation.ids import run_started_id
from main_backend.conversation.paging import encode_cursor, newest_first
from main_backend.conversation.threads import path_to
from main_backend.conversation.turns import owned_thread
from main_backend.errors import RunNotFound, ThreadNotFound
from main_backend.events.fold import MessageState, RunState, RunStatus
from main_backend.events.projections import load_runs, run_from_row
from main_backend.events.store import EventStore
from main_backend.events.tables import runs as runs_table


async def owned_run(store: EventStore, user: str, thread_id: str, run_id: str) -> RunState:
    """A run of the user's live thread; any other run is not found, alike (a run of a
    thread that is not theirs too: its thread is not named)."""
    try:
        await owned_thread(store, thread_id, user)
    except ThreadNotFound:
        raise RunNotFound(thread_id, run_id) from None
    async with store.db.engine.connect() as conn:
        run = (await load_runs(conn, thread_id, [run_id])).get(run_id)
    if run is None:
        raise RunNotFound(thread_id, run_id)
    return run


async def answered_path(store: EventStore, thread_id: str, run_id: str) -> list[MessageState]:
    """The path a started run answers, first message first: its prompt's messages (the
    run's input last), which its answer follows."""
    started = await store.get_event(run_started_id(run_id))
    if started is None or started.thread_id != thread_id:
        return []
    parent_id = started.data.get("parent_id")
    if "parent_id" not in started.data:  # written before threads were trees
        inputs = await recorded_inputs(store, run_id)
        parent_id = inputs[-1].message_id if inputs else None
    return await path_to(store, thread_id, parent_id if isinstance(parent_id, str) else None)


class RunService:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def page(
        self, user: str, thread_id: str, limit: int, cursor: str | None
    ) -> tuple[list[RunState], str | None]:
        """The thread's runs, newest first, a page at a time."""
        await owned_thread(self.store, thread_id, user)
        query = sa.select(runs_table).where(runs_table.c.thread_id == thread_id).limit(limit + 1)
        query = newest_first(query, runs_table.c.created_at, runs_table.c.run_id, cursor)
        async with self.store.db.engine.connect() as conn:
            found = [run_from_row(row) for row in await conn.execute(query)]
        page = found[:limit]
        last = page[-1] if len(found) > limit else None
        return page, None if last is None else encode_cursor(last.created_at, last.run_id)

    async def slice(
        self,
        user: str,
        thread_id: str,
        limit: int,
        offset: int,
        statuses: Collection[RunStatus] | None = None,
    ) -> list[RunState]:
        """The thread's runs newest first (only those of `statuses`, if given), by offset."""
        await owned_thread(self.store, thread_id, user)
        r = runs_table.c
        query = sa.select(runs_table).where(r.thread_id == thread_id)
        if statuses is not None:
            query = query.where(r.status.in_(statuses))
        query = query.order_by(r.created_at.desc(), r.run_id.desc()).limit(limit).offset(offset)
        async with self.store.db.engine.connect() as conn:
            return [run_from_row(row) for row in await conn.execute(query)]

    async def get(self, user: str, thread_id: str, run_id: str) -> RunState:
        return await owned_run(self.store, user, thread_id, run_id)
