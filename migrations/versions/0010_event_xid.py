"""Each event's transaction id, so the global feed stays gap-free without a global lock.

- `events.xid`: on Postgres, the id of the transaction that wrote the event
  (`pg_current_xact_id()`, as a server default: every writer sets it, hand-written rows
  too); on SQLite NULL (one writer at a time: positions commit in order there);
- an index of the events by (xid, position): the feed's order.

Existing rows get 0: they were written under the global append lock, so they committed
in position order, before any transaction that writes from now on.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# xid8 has no cast to bigint but its text form is one (a 64-bit, epoch-extended id).
XID_DEFAULT = "(pg_current_xact_id()::text::bigint)"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        # A constant default fills the existing rows without rewriting them (nor firing
        # the log's refuse-update trigger); the transaction id is the default from now on.
        op.add_column("events", sa.Column("xid", sa.BigInteger(), server_default="0"))
        op.alter_column("events", "xid", server_default=sa.text(XID_DEFAULT))
    else:
        op.add_column("events", sa.Column("xid", sa.BigInteger(), nullable=True))
    op.create_index(
        "ix_events_xid_position",
        "events",
        ["xid", "position"],
        # SQLite's rows hold no xid: an empty index costs its appends nothing.
        sqlite_where=sa.text("xid IS NOT NULL"),
    )


def downgrade() -> None:
    op.drop_index("ix_events_xid_position", "events")
    # Plain ALTER TABLE … DROP COLUMN, as in 0009.
    with op.batch_alter_table("events", recreate="never") as batch:
        batch.drop_column("xid")
