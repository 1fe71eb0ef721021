"""The `runs` read model: one row per run, kept with each append; backfilled from the log.

The backfill is the runs' fold of today's code (`fold_runs`), exactly what
`POST /admin/projections/rebuild` writes, so a deploy by `alembic upgrade head`
serves every existing thread's runs at once. It writes the columns this revision
creates, named here, so a later revision adding columns does not change it.

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25
"""

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from main_backend.events.fold import RUN_TYPES, fold_runs
from main_backend.events.tables import UTCDateTime, event_from_row
from main_backend.events.types import StoredEvent

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)
ID = sa.String(64)

# Threads whose runs are folded per query: bounded memory however long the log.
_THREADS_PER_QUERY = 200

# The tables as this revision reads and writes them (typed, so JSON and times decode).
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
_threads = sa.table("threads", sa.column("thread_id", ID))
_runs = sa.table(
    "runs",
    sa.column("thread_id", ID),
    sa.column("run_id", ID),
    sa.column("status", sa.String(16)),
    sa.column("created_at", UTCDateTime()),
    sa.column("started_at", UTCDateTime()),
    sa.column("ended_at", UTCDateTime()),
    sa.column("model", sa.Text()),
    sa.column("usage", JSON),
    sa.column("error", JSON),
    sa.column("message_id", ID),
    sa.column("cancelled_by", sa.String(16)),
)


def upgrade() -> None:
    op.create_table(
        "runs",
        sa.Column("thread_id", ID, nullable=False),
        sa.Column("run_id", ID, nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("started_at", TIMESTAMP, nullable=True),
        sa.Column("ended_at", TIMESTAMP, nullable=True),
        sa.Column("model", sa.Text(), nullable=True),
        sa.Column("usage", JSON, nullable=True),
        sa.Column("error", JSON, nullable=True),
        sa.Column("message_id", ID, nullable=True),
        sa.Column("cancelled_by", sa.String(16), nullable=True),
        sa.ForeignKeyConstraint(
            ["thread_id"], ["threads.thread_id"], name="fk_runs_thread_id_threads"
        ),
        sa.PrimaryKeyConstraint("thread_id", "run_id", name="pk_runs"),
    )
    op.create_index(
        "ix_runs_thread_id_created_at_run_id", "runs", ["thread_id", "created_at", "run_id"]
    )
    _backfill(op.get_bind())


def _backfill(conn: sa.Connection) -> None:
    """Every thread's runs, folded from its run events, a bounded set of threads at a time."""
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
            .where(_events.c.thread_id.in_(thread_ids), _events.c.type.in_(sorted(RUN_TYPES)))
            .order_by(_events.c.thread_id, _events.c.version)
        )
        by_thread: dict[str, list[StoredEvent]] = {}
        for row in conn.execute(query):
            by_thread.setdefault(row.thread_id, []).append(event_from_row(row))
        rows: list[dict[str, Any]] = [
            {column.name: getattr(run, column.name) for column in _runs.c}
            for events in by_thread.values()
            for run in fold_runs(events).values()
        ]
        if rows:
            conn.execute(_runs.insert(), rows)


def downgrade() -> None:
    op.drop_index("ix_runs_thread_id_created_at_run_id", table_name="runs")
    op.drop_table("runs")
