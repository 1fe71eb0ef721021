"""Index the admin's thread listing across users (most recently updated first).

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-24
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index("ix_threads_updated_at_thread_id", "threads", ["updated_at", "thread_id"])


def downgrade() -> None:
    op.drop_index("ix_threads_updated_at_thread_id", table_name="threads")
