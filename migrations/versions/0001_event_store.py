"""The event store: the append-only `events` log and its `threads` / `messages` read models.

The database itself refuses UPDATE and DELETE on `events` (and TRUNCATE on
Postgres), so no code path, script or operator mistake can rewrite history.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
TIMESTAMP = sa.DateTime(timezone=True)
ID = sa.String(64)

APPEND_ONLY_MESSAGE = "events are append-only: UPDATE, DELETE and TRUNCATE are refused"

SQLITE_TRIGGERS = [
    f"""CREATE TRIGGER events_refuse_{verb.lower()} BEFORE {verb} ON events
        BEGIN SELECT RAISE(ABORT, '{APPEND_ONLY_MESSAGE}'); END"""
    for verb in ("UPDATE", "DELETE")
]

POSTGRES_TRIGGERS = [
    f"""CREATE FUNCTION events_refuse_change() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN RAISE EXCEPTION '{APPEND_ONLY_MESSAGE}' USING ERRCODE = 'insufficient_privilege';
        END $$""",
    """CREATE TRIGGER events_refuse_update_delete BEFORE UPDATE OR DELETE ON events
        FOR EACH ROW EXECUTE FUNCTION events_refuse_change()""",
    """CREATE TRIGGER events_refuse_truncate BEFORE TRUNCATE ON events
        FOR EACH STATEMENT EXECUTE FUNCTION events_refuse_change()""",
]


def upgrade() -> None:
    op.create_table(
        "events",
        sa.Column(
            "position",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            autoincrement=True,
            nullable=False,
        ),
        sa.Column("event_id", ID, nullable=False),
        sa.Column("thread_id", ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("data", JSON, nullable=False),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("recorded_at", TIMESTAMP, nullable=False),
        sa.PrimaryKeyConstraint("position", name="pk_events"),
        sa.UniqueConstraint("event_id", name="uq_events_event_id"),
        sa.UniqueConstraint("thread_id", "version", name="uq_events_thread_id_version"),
    )
    op.create_table(
        "threads",
        sa.Column("thread_id", ID, nullable=False),
        sa.Column("owner", sa.String(255), nullable=False),
        sa.Column("title", sa.Text(), nullable=True),
        sa.Column("metadata", JSON, nullable=False),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("forked_from", JSON, nullable=True),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.Column("updated_at", TIMESTAMP, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("message_count", sa.Integer(), nullable=False),
        sa.Column("active_run_id", ID, nullable=True),
        sa.Column("deleted", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("thread_id", name="pk_threads"),
    )
    op.create_index(
        "ix_threads_owner_updated_at_thread_id", "threads", ["owner", "updated_at", "thread_id"]
    )
    op.create_table(
        "messages",
        sa.Column("message_id", ID, nullable=False),
        sa.Column("thread_id", ID, nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("role", sa.String(16), nullable=False),
        sa.Column("content", sa.Text(), nullable=False),
        sa.Column("run_id", ID, nullable=True),
        sa.Column("partial", sa.Boolean(), nullable=False),
        sa.Column("created_at", TIMESTAMP, nullable=False),
        sa.ForeignKeyConstraint(
            ["thread_id"], ["threads.thread_id"], name="fk_messages_thread_id_threads"
        ),
        sa.PrimaryKeyConstraint("message_id", name="pk_messages"),
        sa.UniqueConstraint("thread_id", "version", name="uq_messages_thread_id_version"),
    )
    dialect = op.get_bind().dialect.name
    for statement in SQLITE_TRIGGERS if dialect == "sqlite" else POSTGRES_TRIGGERS:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER events_refuse_truncate ON events")
        op.execute("DROP TRIGGER events_refuse_update_delete ON events")
        op.execute("DROP FUNCTION events_refuse_change()")
    else:
        op.execute("DROP TRIGGER events_refuse_update")
        op.execute("DROP TRIGGER events_refuse_delete")
    op.drop_table("messages")
    op.drop_index("ix_threads_owner_updated_at_thread_id", table_name="threads")
    op.drop_table("threads")
    op.drop_table("events")
