"""Queued runs and rollbacks (`if_busy`): a thread's queue, rolled-back messages, and
why a run is asked to stop.

- `threads.queued_run_ids`: the thread's runs accepted while it was busy, oldest first;
- `messages.rolled_back`: a message a `run.rolled_back` took out of the history;
- `run_leases.cancel_reason`: who asked the run to stop (user, interrupt, rollback);
- a partial index of the pending runs, which the sweeper starts when their thread is idle.

No event written before this revision queues or rolls back a run, so the defaults are
what a fold of the log gives for every existing row.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
PENDING = sa.text("status = 'pending'")


def upgrade() -> None:
    op.add_column(
        "threads",
        sa.Column("queued_run_ids", JSON, nullable=False, server_default=sa.text("'[]'")),
    )
    op.add_column(
        "messages",
        sa.Column("rolled_back", sa.Boolean(), nullable=False, server_default=sa.false()),
    )
    op.add_column("run_leases", sa.Column("cancel_reason", sa.String(16), nullable=True))
    op.create_index(
        "ix_runs_pending",
        "runs",
        ["thread_id"],
        sqlite_where=PENDING,
        postgresql_where=PENDING,
    )


def downgrade() -> None:
    op.drop_index("ix_runs_pending", "runs")
    # Plain ALTER TABLE … DROP COLUMN (SQLite ≥ 3.35): a batch copy of `threads` would
    # drop the table that `messages` and `runs` refer to, which SQLite refuses.
    for table, column in (
        ("run_leases", "cancel_reason"),
        ("messages", "rolled_back"),
        ("threads", "queued_run_ids"),
    ):
        with op.batch_alter_table(table, recreate="never") as batch:
            batch.drop_column(column)
