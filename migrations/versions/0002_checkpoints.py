# ruff: noqa: E501  (the savers' DDL is copied verbatim, long lines included)
"""LangGraph's checkpoint tables, so that `alembic upgrade head` is the only schema step.

The DDL is the checkpoint savers' own, copied verbatim and frozen here:

* Postgres: `langgraph.checkpoint.postgres.base.BasePostgresSaver.MIGRATIONS`
  from langgraph-checkpoint-postgres 3.2.0. They run the way
  `AsyncPostgresSaver.setup()` runs them, including the version rows in
  `checkpoint_migrations`, so the saver considers itself set up and a later
  `setup()` is a no-op. The app never calls `setup()`.
* SQLite: the tables `AsyncSqliteSaver.setup()` creates, from
  langgraph-checkpoint-sqlite 3.1.2 (`checkpoints` and `writes`). Its
  `PRAGMA journal_mode=WAL` is left out: the app's connections set WAL, and the
  journal mode cannot change inside the migration's transaction.

A saver release that adds a migration needs a new revision here;
tests/integration/conversation/test_checkpoints.py fails until it has one.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import context, op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# Verbatim copy of BasePostgresSaver.MIGRATIONS, langgraph-checkpoint-postgres 3.2.0.
# The position of a statement in the list is its version in `checkpoint_migrations`.
POSTGRES_MIGRATIONS = [
    """CREATE TABLE IF NOT EXISTS checkpoint_migrations (
    v INTEGER PRIMARY KEY
);""",
    """CREATE TABLE IF NOT EXISTS checkpoints (
    thread_id TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL DEFAULT '',
    checkpoint_id TEXT NOT NULL,
    parent_checkpoint_id TEXT,
    type TEXT,
    checkpoint JSONB NOT NULL,
    metadata JSONB NOT NULL DEFAULT '{}',
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
);""",
    """CREATE TABLE IF NOT EXISTS checkpoint_blobs (
    thread_id TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL DEFAULT '',
    channel TEXT NOT NULL,
    version TEXT NOT NULL,
    type TEXT NOT NULL,
    blob BYTEA,
    PRIMARY KEY (thread_id, checkpoint_ns, channel, version)
);""",
    """CREATE TABLE IF NOT EXISTS checkpoint_writes (
    thread_id TEXT NOT NULL,
    checkpoint_ns TEXT NOT NULL DEFAULT '',
    checkpoint_id TEXT NOT NULL,
    task_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    channel TEXT NOT NULL,
    type TEXT,
    blob BYTEA NOT NULL,
    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
);""",
    "ALTER TABLE checkpoint_blobs ALTER COLUMN blob DROP not null;",
    # NOTE: this is a no-op migration to ensure that the versions in the migrations table are correct.
    # This is necessary due to an empty migration previously added to the list.
    "SELECT 1;",
    """
    CREATE INDEX CONCURRENTLY IF NOT EXISTS checkpoints_thread_id_idx ON checkpoints(thread_id);
    """,
    """
    CREATE INDEX CONCURRENTLY IF NOT EXISTS checkpoint_blobs_thread_id_idx ON checkpoint_blobs(thread_id);
    """,
    """
    CREATE INDEX CONCURRENTLY IF NOT EXISTS checkpoint_writes_thread_id_idx ON checkpoint_writes(thread_id);
    """,
    """ALTER TABLE checkpoint_writes ADD COLUMN IF NOT EXISTS task_path TEXT NOT NULL DEFAULT '';""",
]

# Verbatim copy of the tables in AsyncSqliteSaver.setup(), langgraph-checkpoint-sqlite 3.1.2.
SQLITE_MIGRATIONS = [
    """CREATE TABLE IF NOT EXISTS checkpoints (
                    thread_id TEXT NOT NULL,
                    checkpoint_ns TEXT NOT NULL DEFAULT '',
                    checkpoint_id TEXT NOT NULL,
                    parent_checkpoint_id TEXT,
                    type TEXT,
                    checkpoint BLOB,
                    metadata BLOB,
                    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id)
                );""",
    """CREATE TABLE IF NOT EXISTS writes (
                    thread_id TEXT NOT NULL,
                    checkpoint_ns TEXT NOT NULL DEFAULT '',
                    checkpoint_id TEXT NOT NULL,
                    task_id TEXT NOT NULL,
                    task_path TEXT NOT NULL DEFAULT '',
                    idx INTEGER NOT NULL,
                    channel TEXT NOT NULL,
                    type TEXT,
                    value BLOB,
                    PRIMARY KEY (thread_id, checkpoint_ns, checkpoint_id, task_id, idx)
                );""",
]

POSTGRES_TABLES = ["checkpoint_writes", "checkpoint_blobs", "checkpoints", "checkpoint_migrations"]
SQLITE_TABLES = ["writes", "checkpoints"]


def _in_transaction(statement: str) -> str:
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction block, and this
    # migration runs in one. A plain CREATE INDEX builds the same index; it only
    # locks the table against writes while it builds, which nothing notices on
    # a table this migration has just created (or that IF NOT EXISTS skips).
    return statement.replace("CREATE INDEX CONCURRENTLY", "CREATE INDEX")


def _upgrade_postgres() -> None:
    # As AsyncPostgresSaver.setup(): create the version table, then run and
    # record every migration after the latest one recorded (all of them on a
    # fresh database; the missing ones where someone ran setup() before).
    op.execute(POSTGRES_MIGRATIONS[0])
    latest = -1
    if not context.is_offline_mode():
        recorded = (
            op.get_bind()
            .execute(sa.text("SELECT v FROM checkpoint_migrations ORDER BY v DESC LIMIT 1"))
            .scalar()
        )
        latest = -1 if recorded is None else recorded
    for version in range(latest + 1, len(POSTGRES_MIGRATIONS)):
        op.execute(_in_transaction(POSTGRES_MIGRATIONS[version]))
        op.execute(
            sa.text("INSERT INTO checkpoint_migrations (v) VALUES (:v)").bindparams(v=version)
        )


def upgrade() -> None:
    if op.get_context().dialect.name == "postgresql":
        _upgrade_postgres()
    else:
        for statement in SQLITE_MIGRATIONS:
            op.execute(statement)


def downgrade() -> None:
    postgres = op.get_context().dialect.name == "postgresql"
    for table in POSTGRES_TABLES if postgres else SQLITE_TABLES:
        op.execute(f"DROP TABLE {table}")
