"""Run leases name the run's owner, so each user's runs in flight can be counted.

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "run_leases", sa.Column("owner", sa.String(255), nullable=False, server_default="")
    )
    # Leases in flight during the upgrade: their thread's owner (a lease whose
    # thread was never written keeps "" and counts against nobody).
    op.execute(
        "UPDATE run_leases SET owner = COALESCE((SELECT threads.owner FROM threads "
        "WHERE threads.thread_id = run_leases.thread_id), '')"
    )
    with op.batch_alter_table("run_leases") as batch:
        batch.alter_column("owner", server_default=None)
        batch.create_index("ix_run_leases_owner", ["owner"])


def downgrade() -> None:
    with op.batch_alter_table("run_leases") as batch:
        batch.drop_index("ix_run_leases_owner")
        batch.drop_column("owner")
