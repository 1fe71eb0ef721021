"""Threads as their owner sees them: create, list, read, rename, delete, page messages."""

from __future__ import annotations

import builtins
import uuid
from typing import Any

import sqlalchemy as sa

from main_backend.conversation.paging import encode_cursor, newest_first
from main_backend.conversation.turns import owned_thread
from main_backend.errors import InvalidRequest, VersionConflict
from main_backend.events.fold import MessageState, ThreadState, fold
from main_backend.events.projections import message_from_row, thread_from_row
from main_backend.events.store import EventStore
from main_backend.events.tables import messages as messages_table
from main_backend.events.tables import threads as threads_table
from main_backend.events.types import (
    MESSAGE_ADDED,
    THREAD_CREATED,
    THREAD_DELETED,
    THREAD_UPDATED,
    NewEvent,
    ThreadUpdatedData,
    new_event,
    new_id,
)


async def page_threads(
    store: EventStore,
    *,
    owner: str | None,
    include_deleted: bool,
    limit: int,
    cursor: str | None,
) -> tuple[list[ThreadState], str | None]:
    """Threads most recently updated first (one owner's or everyone's), a page at a time."""
    query = sa.select(threads_table).limit(limit + 1)
    if owner is not None:
        query = query.where(threads_table.c.owner == owner)
    if not include_deleted:
        query = query.where(threads_table.c.deleted.is_(False))
    query = newest_first(query, threads_table.c.updated_at, threads_table.c.thread_id, cursor)
    async with store.db.engine.connect() as conn:
        found = [thread_from_row(row) for row in await conn.execute(query)]
    page = found[:limit]
    last = page[-1] if len(found) > limit else None
    return page, None if last is None else encode_cursor(last.updated_at, last.thread_id)


class ThreadService:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def create(
        self, user: str, title: str | None, metadata: dict[str, Any], request_id: str | None
    ) -> ThreadState:
        thread_id = str(uuid.uuid4())
        await self.store.append(
            thread_id,
            [
                new_event(
                    THREAD_CREATED,
                    {
                        "owner": user,
                        "title": title,
                        "metadata": metadata,
                        "forked_from": None,
                    },
                    {"request_id": request_id, "user": user},
                )
            ],
            0,
        )
        return await owned_thread(self.store, thread_id, user)

    async def get(self, user: str, thread_id: str) -> ThreadState:
        return await owned_thread(self.store, thread_id, user)

    async def page(
        self, user: str, limit: int, cursor: str | None
    ) -> tuple[list[ThreadState], str | None]:
        return await page_threads(
            self.store, owner=user, include_deleted=False, limit=limit, cursor=cursor
        )

    async def messages(
        self, user: str, thread_id: str, after_version: int, limit: int
    ) -> tuple[builtins.list[MessageState], str | None]:
        # (`builtins.`: in this class `list` is the method above.)
        await owned_thread(self.store, thread_id, user)
        query = (
            sa.select(messages_table)
            .where(
                messages_table.c.thread_id == thread_id,
                messages_table.c.version > after_version,
                messages_table.c.rolled_back.is_(False),
            )
            .order_by(messages_table.c.version)
            .limit(limit + 1)
        )
        async with self.store.db.engine.connect() as conn:
            found = [message_from_row(row) for row in await conn.execute(query)]
        page = found[:limit]
        return page, str(page[-1].version) if len(found) > limit else None

    async def update(
        self, user: str, thread_id: str, changes: dict[str, Any], request_id: str | None
    ) -> ThreadState:
        data: ThreadUpdatedData = {}
        if "title" in changes:
            data["title"] = changes["title"]
        if "metadata" in changes:
            data["metadata"] = changes["metadata"]
        return await self._append(
            user,
            thread_id,
            new_event(THREAD_UPDATED, data, {"request_id": request_id, "user": user}),
        )

    async def delete(self, user: str, thread_id: str, request_id: str | None) -> None:
        await self._append(
            user, thread_id, new_event(THREAD_DELETED, {}, {"request_id": request_id, "user": user})
        )

    async def fork(
        self, user: str, thread_id: str, at_version: int | None, request_id: str | None
    ) -> ThreadState:
        """A new thread of the same user holding the history up to `at_version`."""
        source = await owned_thread(self.store, thread_id, user)
        at = source.version if at_version is None else at_version
        if not 1 <= at <= source.version:
            raise InvalidRequest(f"at_version must be between 1 and {source.version}", "at_version")
        state, messages = fold(await self.store.read_thread(thread_id, to_version=at))
        assert state is not None
        metadata = {"request_id": request_id, "user": user}
        fork_id = str(uuid.uuid4())
        created = new_event(
            THREAD_CREATED,
            {
                "owner": user,
                "title": state.title,
                "metadata": state.metadata,
                "forked_from": {"thread_id": thread_id, "version": at},
                "system_prompt": state.system_prompt,
            },
            metadata,
        )
        copies = [
            new_event(
                MESSAGE_ADDED,
                {
                    "message_id": new_id(),
                    "role": m.role,
                    "content": m.content,
                    "run_id": None,
                    "partial": m.partial,
                },
                metadata,
            )
            for m in messages
            if not m.rolled_back
        ]
        await self.store.append(fork_id, [created, *copies], 0)
        return await owned_thread(self.store, fork_id, user)

    async def _append(self, user: str, thread_id: str, event: NewEvent) -> ThreadState:
        while True:
            thread = await owned_thread(self.store, thread_id, user)
            try:
                await self.store.append(thread_id, [event], thread.version)
            except VersionConflict:
                continue  # a turn moved the thread on; the event's id keeps this idempotent
            return await self.store.get_thread(thread_id) or thread
