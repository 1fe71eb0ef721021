"""Threads are trees: each message's parent, the thread's active leaf, and which messages
are on the active path.

- `messages.parent_id`: the message it follows (None for a first message);
- `messages.active`: on the thread's active path (root → active leaf);
- `threads.head_id`: the active leaf;
- an index of the messages by (parent_id, thread_id): children, and siblings;
- a partial index of the active path's messages by (thread_id, version).

The backfill is today's fold (`fold`), exactly what `POST /admin/projections/rebuild`
writes: events written before trees hang each message under the one before it, so
every existing thread reads as one branch, all of it active. The log is not touched.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from main_backend.errors import InvalidEvent
from main_backend.events.fold import fold
from main_backend.events.tables import UTCDateTime, event_from_row
from main_backend.events.types import StoredEvent

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ID = sa.String(64)
ACTIVE = sa.column("active", sa.Boolean()).is_(True)

# Threads folded per query: bounded memory however long the log.
_THREADS_PER_QUERY = 200

_events = sa.table(
    "events",
    sa.column("position", sa.BigInteger()),
    sa.column("event_id", ID),
    sa.column("thread_id", ID),
    sa.column("version", sa.Integer()),
    sa.column("type", sa.String(64)),
    sa.column("data", JSON),
    sa.column("metadata", JSON),
    sa.column("recorded_at", UTCDateTime()),
)
_threads = sa.table("threads", sa.column("thread_id", ID), sa.column("head_id", ID))
_messages = sa.table(
    "messages",
    sa.column("message_id", ID),
    sa.column("parent_id", ID),
    sa.column("active", sa.Boolean()),
)


def upgrade() -> None:
    op.add_column("threads", sa.Column("head_id", ID, nullable=True))
    op.add_column("messages", sa.Column("parent_id", ID, nullable=True))
    op.add_column(
        "messages", sa.Column("active", sa.Boolean(), nullable=False, server_default=sa.false())
    )
    op.create_index("ix_messages_parent_id_thread_id", "messages", ["parent_id", "thread_id"])
    op.create_index(
        "ix_messages_active_path",
        "messages",
        ["thread_id", "version"],
        sqlite_where=ACTIVE,
        postgresql_where=ACTIVE,
    )
    _backfill(op.get_bind())


def _backfill(conn: sa.Connection) -> None:
    """Every thread's tree, folded from its log, a bounded set of threads at a time."""
    after = ""
    while True:
        thread_ids = list(
            conn.scalars(
                sa.select(_threads.c.thread_id)
                .where(_threads.c.thread_id > after)
                .order_by(_threads.c.thread_id)
                .limit(_THREADS_PER_QUERY)
            )
        )
        if not thread_ids:
            return
        after = thread_ids[-1]
        query = (
            sa.select(_events)
            .where(_events.c.thread_id.in_(thread_ids))
            .order_by(_events.c.thread_id, _events.c.version)
        )
        by_thread: dict[str, list[StoredEvent]] = {}
        for row in conn.execute(query):
            by_thread.setdefault(row.thread_id, []).append(event_from_row(row))
        heads, messages = [], []
        for thread_id, events in by_thread.items():
            try:
                state, folded = fold(events)
            except InvalidEvent:  # a log the fold cannot read has no read model either
                continue
            if state is None:
                continue
            heads.append({"id": thread_id, "head": state.head_id})
            messages += [
                {"id": m.message_id, "parent": m.parent_id, "on_path": m.active} for m in folded
            ]
        if heads:
            conn.execute(
                _threads.update()
                .where(_threads.c.thread_id == sa.bindparam("id"))
                .values(head_id=sa.bindparam("head")),
                heads,
            )
        if messages:
            conn.execute(
                _messages.update()
                .where(_messages.c.message_id == sa.bindparam("id"))
                .values(parent_id=sa.bindparam("parent"), active=sa.bindparam("on_path")),
                messages,
            )


def downgrade() -> None:
    op.drop_index("ix_messages_active_path", "messages")
    op.drop_index("ix_messages_parent_id_thread_id", "messages")
    # Plain ALTER TABLE … DROP COLUMN, as in 0008: a batch copy of `threads` breaks the
    # foreign keys that refer to it.
    for table, column in (
        ("messages", "active"),
        ("messages", "parent_id"),
        ("threads", "head_id"),
    ):
        with op.batch_alter_table(table, recreate="never") as batch:
            batch.drop_column(column)
