"""Threads as their owner sees them: create, list, read, rename, delete, page the active
path's messages, switch branches (checkout), fork."""

from __future__ import annotations

import builtins
import uuid
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Literal

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from main_backend.conversation.paging import encode_cursor, newest_first
from main_backend.conversation.turns import owned_thread
from main_backend.errors import (
    InvalidRequest,
    MessageNotFound,
    ThreadBusy,
    ThreadExists,
    VersionConflict,
)
from main_backend.events.fold import MessageState, ThreadState, active_path, fold
from main_backend.events.projections import message_from_row, message_select, thread_from_row
from main_backend.events.store import EventStore
from main_backend.events.tables import messages as messages_table
from main_backend.events.tables import threads as threads_table
from main_backend.events.types import (
    MESSAGE_ADDED,
    THREAD_CREATED,
    THREAD_DELETED,
    THREAD_HEAD_MOVED,
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


async def path_to(store: EventStore, thread_id: str, leaf_id: str | None) -> list[MessageState]:
    """The path from the thread's first message down to `leaf_id` (none for None)."""
    path = [m async for m in store.iter_path(thread_id, leaf_id)]
    path.reverse()
    return path


ThreadSort = Literal["thread_id", "created_at", "updated_at"]


@dataclass(frozen=True, slots=True)
class ThreadFilter:
    """Which of a user's threads a search returns: all of `metadata`'s keys with equal
    values, busy ones or idle ones only if `busy` is given, those of `ids` if given."""

    metadata: dict[str, Any] = field(default_factory=dict)
    busy: bool | None = None
    ids: frozenset[str] | None = None

    def admits(self, thread: ThreadState) -> bool:
        if self.busy is not None and (thread.status == "busy") != self.busy:
            return False
        if self.ids is not None and thread.thread_id not in self.ids:
            return False
        return all(thread.metadata.get(k, _MISSING) == v for k, v in self.metadata.items())


_MISSING = object()
# Threads read per query while a search filters them.
_SEARCH_BATCH = 200


@dataclass(frozen=True, slots=True)
class PathEntry:
    """A message of the active path and the ids of its siblings (itself included)."""

    message: MessageState
    sibling_ids: list[str]


async def _siblings(
    conn: AsyncConnection, thread_id: str, parent_ids: Collection[str | None]
) -> dict[str | None, list[str]]:
    """The children of each of `parent_ids` (None: the thread's first messages), oldest
    first, without the rolled-back ones: one query by the (parent_id, thread_id) index."""
    m = messages_table.c
    named = [p for p in parent_ids if p is not None]
    # Led by the parent ids (the (parent_id, thread_id) index); the thread is checked on
    # the rows, so no stale estimate of its size makes this a scan of the thread.
    under: list[sa.ColumnElement[bool]] = [m.parent_id.in_(named)] if named else []
    if None in parent_ids:
        under.append(sa.and_(m.parent_id.is_(None), m.thread_id == thread_id))
    if not under:
        return {}
    query = (
        sa.select(m.message_id, m.parent_id, m.thread_id)
        .where(m.rolled_back.is_(False), sa.or_(*under))
        .order_by(m.version)
    )
    found: dict[str | None, list[str]] = {}
    for row in await conn.execute(query):
        if row.thread_id == thread_id:
            found.setdefault(row.parent_id, []).append(row.message_id)
    return found


class ThreadService:
    def __init__(self, store: EventStore) -> None:
        self.store = store

    async def create(
        self,
        user: str,
        title: str | None,
        metadata: dict[str, Any],
        request_id: str | None,
        thread_id: str | None = None,
    ) -> ThreadState:
        """A new thread, with the id given (`ThreadExists` if it is taken) or a new one."""
        thread_id = thread_id or str(uuid.uuid4())
        try:
            await self._create(user, title, metadata, request_id, thread_id)
        except VersionConflict:
            raise ThreadExists(thread_id) from None
        return await owned_thread(self.store, thread_id, user)

    async def _create(
        self,
        user: str,
        title: str | None,
        metadata: dict[str, Any],
        request_id: str | None,
        thread_id: str,
    ) -> None:
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

    async def get(self, user: str, thread_id: str) -> ThreadState:
        return await owned_thread(self.store, thread_id, user)

    async def page(
        self, user: str, limit: int, cursor: str | None
    ) -> tuple[list[ThreadState], str | None]:
        return await page_threads(
            self.store, owner=user, include_deleted=False, limit=limit, cursor=cursor
        )

    async def search(
        self,
        user: str,
        where: ThreadFilter,
        limit: int,
        offset: int,
        sort_by: ThreadSort = "updated_at",
        descending: bool = True,
    ) -> builtins.list[ThreadState]:
        """The user's threads that `where` admits, in the order asked, from `offset` on.
        The filter is applied to the read model's rows a batch at a time (metadata is
        free-form JSON, compared alike on both engines)."""
        t = threads_table.c
        column = t[sort_by]
        order = [column.desc(), t.thread_id.desc()] if descending else [column, t.thread_id]
        query = (
            sa.select(threads_table)
            .where(t.owner == user, t.deleted.is_(False))
            .order_by(*order)
            .limit(_SEARCH_BATCH)
        )
        found: builtins.list[ThreadState] = []
        skip, read = offset, 0
        async with self.store.db.engine.connect() as conn:
            while len(found) < limit:
                rows = (await conn.execute(query.offset(read))).all()
                read += len(rows)
                for thread in (thread_from_row(row) for row in rows):
                    if not where.admits(thread):
                        continue
                    if skip:
                        skip -= 1
                    elif len(found) < limit:
                        found.append(thread)
                if len(rows) < _SEARCH_BATCH:
                    break
        return found

    async def path(
        self, user: str, thread_id: str
    ) -> tuple[ThreadState, builtins.list[MessageState]]:
        """The thread and its active path, first message first."""
        thread = await owned_thread(self.store, thread_id, user)
        return thread, await path_to(self.store, thread_id, thread.head_id)

    async def active_paths(
        self, threads: Collection[ThreadState]
    ) -> dict[str, builtins.list[MessageState]]:
        """The active paths of these threads (already read as the user's), first message
        first: one query on the active-path index."""
        m = messages_table.c
        found: dict[str, builtins.list[MessageState]] = {t.thread_id: [] for t in threads}
        if not found:
            return found
        query = (
            message_select()
            .where(m.thread_id.in_(found), m.active.is_(True))
            .order_by(m.thread_id, m.version)
        )
        async with self.store.db.engine.connect() as conn:
            for row in await conn.execute(query):
                found[row.thread_id].append(message_from_row(row))
        return found

    async def path_at(
        self, user: str, thread_id: str, message_id: str
    ) -> tuple[ThreadState, builtins.list[MessageState]]:
        """The thread and the path down to its message `message_id`, on any branch."""
        thread = await owned_thread(self.store, thread_id, user)
        message = await self.store.get_message(thread_id, message_id)
        if message is None or message.rolled_back:
            raise MessageNotFound(thread_id, message_id)
        return thread, await path_to(self.store, thread_id, message_id)

    async def messages(
        self, user: str, thread_id: str, after_version: int, limit: int
    ) -> tuple[builtins.list[PathEntry], str | None]:
        """The active path (root → active leaf) after `after_version`, oldest first, each
        message with its siblings; and the `after_version` of the next page."""
        # (`builtins.`: in this class `list` is the method above.)
        await owned_thread(self.store, thread_id, user)
        m = messages_table.c
        query = (
            message_select()
            .where(m.thread_id == thread_id, m.version > after_version, m.active.is_(True))
            .order_by(m.version)
            .limit(limit + 1)
        )
        async with self.store.db.engine.connect() as conn:
            found = [message_from_row(row) for row in await conn.execute(query)]
            page = found[:limit]
            siblings = await _siblings(conn, thread_id, {p.parent_id for p in page})
        entries = [PathEntry(p, siblings.get(p.parent_id, [p.message_id])) for p in page]
        return entries, str(page[-1].version) if len(found) > limit else None

    async def checkout(
        self,
        user: str,
        thread_id: str,
        message_id: str,
        expected_version: int | None,
        request_id: str | None,
    ) -> ThreadState:
        """Make the newest leaf under `message_id` the active leaf (what a UI shows after
        a click on a sibling's arrow): a `thread.head_moved`, unless it is already."""
        while True:
            thread = await owned_thread(self.store, thread_id, user)
            if expected_version is not None and expected_version != thread.version:
                raise VersionConflict(thread_id, expected_version, thread.version)
            message = await self.store.get_message(thread_id, message_id)
            if message is None or message.rolled_back:
                raise MessageNotFound(thread_id, message_id)
            if thread.status == "busy":
                # The run's answer becomes the active leaf when it is recorded.
                raise ThreadBusy(thread_id, thread.active_run_id)
            leaf = await self.store.newest_leaf(thread_id, message_id)
            if leaf == thread.head_id:
                return thread
            moved = new_event(
                THREAD_HEAD_MOVED,
                {"message_id": leaf},
                {"request_id": request_id, "user": user},
            )
            try:
                await self.store.append(thread_id, [moved], thread.version)
            except VersionConflict:
                if expected_version is not None:
                    raise
                continue  # the thread moved on meanwhile: look again
            return await owned_thread(self.store, thread_id, user)

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

    async def merge_metadata(
        self, user: str, thread_id: str, changes: dict[str, Any], request_id: str | None
    ) -> ThreadState:
        """Set `changes`' keys in the thread's metadata, keeping the others: merged into
        the thread as it is at the append (a concurrent change is never lost)."""
        return await self._append(
            user,
            thread_id,
            lambda thread: new_event(
                THREAD_UPDATED,
                {"metadata": {**thread.metadata, **changes}},
                {"request_id": request_id, "user": user},
            ),
        )

    async def delete(self, user: str, thread_id: str, request_id: str | None) -> None:
        await self._append(
            user, thread_id, new_event(THREAD_DELETED, {}, {"request_id": request_id, "user": user})
        )

    async def fork(
        self, user: str, thread_id: str, at_version: int | None, request_id: str | None
    ) -> ThreadState:
        """A new thread of the same user holding the path that was active at `at_version`
        (one branch: the fork is linear)."""
        source = await owned_thread(self.store, thread_id, user)
        at = source.version if at_version is None else at_version
        if not 1 <= at <= source.version:
            raise InvalidRequest(f"at_version must be between 1 and {source.version}", "at_version")
        state, messages = fold(await self.store.read_thread(thread_id, to_version=at))
        assert state is not None
        path = active_path(messages, state.head_id)
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
        copies = []
        parent_id = None
        for m in path:
            copy_id = new_id()
            copies.append(
                new_event(
                    MESSAGE_ADDED,
                    {
                        "message_id": copy_id,
                        "role": m.role,
                        "content": m.content,
                        "run_id": None,
                        "partial": m.partial,
                        "parent_id": parent_id,
                    },
                    metadata,
                )
            )
            parent_id = copy_id
        await self.store.append(fork_id, [created, *copies], 0)
        return await owned_thread(self.store, fork_id, user)

    async def _append(
        self, user: str, thread_id: str, event: NewEvent | Callable[[ThreadState], NewEvent]
    ) -> ThreadState:
        """Append `event` (or the one made from the thread as it is) at the thread's
        version, reading it again when a turn moved it on meanwhile."""
        while True:
            thread = await owned_thread(self.store, thread_id, user)
            made = event(thread) if callable(event) else event
            try:
                await self.store.append(thread_id, [made], thread.version)
            except VersionConflict:
                continue  # a fixed event's id keeps this idempotent; a made one is remade
            return await self.store.get_thread(thread_id) or thread
