"""A message's text is stored once: in its `message.added` event.

`messages.content` repeated the text of each message's event (the event at the message's
(thread_id, version)); the reads join it in from there now. Dropping the column loses
nothing: the log holds every text. A downgrade copies the texts back from the log.

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-03
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSON = sa.JSON().with_variant(postgresql.JSONB(), "postgresql")
ID = sa.String(64)

_events = sa.table(
    "events",
    sa.column("thread_id", ID),
    sa.column("version", sa.Integer()),
    sa.column("data", JSON),
)
_messages = sa.table(
    "messages",
    sa.column("thread_id", ID),
    sa.column("version", sa.Integer()),
    sa.column("content", sa.Text()),
)


def upgrade() -> None:
    # Plain ALTER TABLE … DROP COLUMN (SQLite ≥ 3.35), as in 0009: a batch copy of a
    # table breaks the foreign keys that refer to it.
    with op.batch_alter_table("messages", recreate="never") as batch:
        batch.drop_column("content")


def downgrade() -> None:
    with op.batch_alter_table("messages", recreate="never") as batch:
        batch.add_column(sa.Column("content", sa.Text(), nullable=False, server_default=""))
    text = (
        sa.select(_events.c.data["content"].as_string())
        .where(
            _events.c.thread_id == _messages.c.thread_id,
            _events.c.version == _messages.c.version,
        )
        .scalar_subquery()
    )
    op.get_bind().execute(_messages.update().values(content=sa.func.coalesce(text, "")))
