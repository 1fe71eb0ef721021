"""The tables: the append-only `events` log and the read models folded from it
(`threads`, `messages`, `runs`)."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import sqlalchemy as sa
from loguru import logger
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.engine import Dialect
from sqlalchemy.ext.asyncio import AsyncConnection

from main_backend.events.types import StoredEvent
from main_backend.values import sanitise

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

JSONType = sa.JSON().with_variant(JSONB(), "postgresql")
# SQLite only auto-increments a column declared exactly INTEGER PRIMARY KEY.
PositionType = sa.BigInteger().with_variant(sa.Integer(), "sqlite")


class UTCDateTime(sa.TypeDecorator[datetime]):
    """Timezone-aware UTC datetimes on both engines (SQLite stores them naive)."""

    impl = sa.DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime")
        return value.astimezone(UTC)

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


ID = sa.String(64)

events = sa.Table(
    "events",
    metadata,
    sa.Column("position", PositionType, primary_key=True, autoincrement=True),
    sa.Column("event_id", ID, nullable=False, unique=True),
    sa.Column("thread_id", ID, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("data", JSONType, nullable=False),
    sa.Column("metadata", JSONType, nullable=False),
    sa.Column("recorded_at", UTCDateTime, nullable=False),
    # Postgres: the id of the transaction that wrote the event, set by a server default
    # (`pg_current_xact_id()`, migration 0010; 0 for the events written before it). The
    # feed orders by (xid, position) and serves only the transactions below the oldest one
    # in progress (see `EventStore.read_all`). SQLite: NULL (positions commit in order).
    sa.Column("xid", sa.BigInteger, nullable=True),
    sa.UniqueConstraint("thread_id", "version"),
)

# The feed's order (on SQLite, where no row has an xid, empty).
sa.Index(
    "ix_events_xid_position",
    events.c.xid,
    events.c.position,
    sqlite_where=events.c.xid.is_not(None),
)

threads = sa.Table(
    "threads",
    metadata,
    sa.Column("thread_id", ID, primary_key=True),
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("title", sa.Text, nullable=True),
    sa.Column("metadata", JSONType, nullable=False),
    sa.Column("system_prompt", sa.Text, nullable=True),
    sa.Column("forked_from", JSONType, nullable=True),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("message_count", sa.Integer, nullable=False),
    sa.Column("active_run_id", ID, nullable=True),
    sa.Column("deleted", sa.Boolean, nullable=False),
    sa.Column("queued_run_ids", JSONType, nullable=False, server_default=sa.text("'[]'")),
    sa.Column("head_id", ID, nullable=True),
    # A user's thread list: most recently updated first, paged by (updated_at, id).
    sa.Index(None, "owner", "updated_at", "thread_id"),
    # Finding runs to resume after a crash.
    sa.Index(None, "active_run_id"),
    # The admin's listing across users, most recently updated first.
    sa.Index(None, "updated_at", "thread_id"),
)

messages = sa.Table(
    "messages",
    metadata,
    sa.Column("message_id", ID, primary_key=True),
    sa.Column("thread_id", ID, sa.ForeignKey("threads.thread_id"), nullable=False),
    sa.Column("version", sa.Integer, nullable=False),
    sa.Column("role", sa.String(16), nullable=False),
    # No text: a message's content is its `message.added` event's, the event at the same
    # (thread_id, version), joined in by the reads (projections.message_select).
    sa.Column("run_id", ID, nullable=True),
    sa.Column("partial", sa.Boolean, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("rolled_back", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.Column("parent_id", ID, nullable=True),
    # On the thread's active path: the page of messages reads these, by version.
    sa.Column("active", sa.Boolean, nullable=False, server_default=sa.false()),
    sa.UniqueConstraint("thread_id", "version"),
    # A message's children (its siblings are its parent's); the thread's first messages
    # by (NULL, thread). Led by the parent: walks and lookups go by ids alone, which no
    # planner's stale estimate of a thread's size turns into a scan of the thread.
    sa.Index(None, "parent_id", "thread_id"),
)

# The active path of a thread, by version: a page of messages and the redrawing of the
# path read only these, however many messages other branches hold.
sa.Index(
    "ix_messages_active_path",
    messages.c.thread_id,
    messages.c.version,
    sqlite_where=messages.c.active.is_(True),
    postgresql_where=messages.c.active.is_(True),
)

# One row per run, kept small (no texts): its answer is a message, its events in the log.
runs = sa.Table(
    "runs",
    metadata,
    sa.Column("thread_id", ID, sa.ForeignKey("threads.thread_id"), primary_key=True),
    sa.Column("run_id", ID, primary_key=True),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False),
    sa.Column("started_at", UTCDateTime, nullable=True),
    sa.Column("ended_at", UTCDateTime, nullable=True),
    sa.Column("model", sa.Text, nullable=True),
    sa.Column("usage", JSONType, nullable=True),
    sa.Column("error", JSONType, nullable=True),
    sa.Column("message_id", ID, nullable=True),
    sa.Column("cancelled_by", sa.String(16), nullable=True),
    # A thread's runs, newest first, paged by (created_at, run_id).
    sa.Index(None, "thread_id", "created_at", "run_id"),
    # The queued runs the sweeper looks for (few at any time).
    sa.Index(
        "ix_runs_pending",
        "thread_id",
        sqlite_where=sa.text("status = 'pending'"),
        postgresql_where=sa.text("status = 'pending'"),
    ),
)


def event_from_row(row: sa.Row[Any]) -> StoredEvent:
    """A stored event as it can be served and folded, whatever the row holds: JSON that is
    not an object is wrapped as `{"value": ...}` and odd values are repaired (`sanitise`),
    so one row written around the append checks never fails a page of the log."""
    where = f"event at position {row.position}"
    return StoredEvent(
        position=row.position,
        event_id=row.event_id,
        thread_id=row.thread_id,
        version=row.version,
        type=row.type,
        data=_object(sanitise(row.data, f"the data of the {where}"), where),
        metadata=_object(sanitise(row.metadata, f"the metadata of the {where}"), where),
        recorded_at=row.recorded_at,
    )


def _object(value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, dict):
        return value
    logger.warning('the {} holds JSON that is not an object; served as {{"value": ...}}', where)
    return {"value": value}


async def exclude_appends(conn: AsyncConnection) -> None:
    """Keep appends out until this transaction ends (a rebuild of the read models).

    SQLite writers hold the write lock already. On Postgres an append locks its thread's
    row (`threads`, FOR NO KEY UPDATE) and then inserts into `events`: EXCLUSIVE locks on
    both tables, taken in that order, wait for the appends in flight and hold off the
    next ones, while plain reads go on.
    """
    if conn.dialect.name == "postgresql":
        await conn.execute(sa.text("LOCK TABLE threads, events IN EXCLUSIVE MODE"))
