"""Coordination rows of runs: leases (who runs what, until when) and idempotency keys.

They live in the database, not in a process, so any replica can take over a
run and a repeated request is recognised whichever replica it reaches.
"""

from __future__ import annotations

import sqlalchemy as sa

from main_backend.events.tables import ID, UTCDateTime, metadata

run_leases = sa.Table(
    "run_leases",
    metadata,
    sa.Column("run_id", ID, primary_key=True),
    sa.Column("thread_id", ID, nullable=False),
    # The user the run answers: their runs in flight are counted against
    # MAX_ACTIVE_RUNS_PER_USER (a new thread has no read-model row to join yet).
    sa.Column("owner", sa.String(255), nullable=False),
    sa.Column("replica_id", sa.String(128), nullable=False),
    sa.Column("expires_at", UTCDateTime, nullable=False),
    sa.Column("cancel_requested", sa.Boolean, nullable=False),
    # Who asked (events.types.CancelledBy): user, interrupt or rollback; None means user.
    sa.Column("cancel_reason", sa.String(16), nullable=True),
    # How many times a replica took the run over after its owner stopped.
    sa.Column("resumes", sa.Integer, nullable=False),
    sa.Index(None, "owner"),
)

idempotency_keys = sa.Table(
    "idempotency_keys",
    metadata,
    sa.Column("owner", sa.String(255), primary_key=True),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("request_hash", sa.String(64), nullable=False),
    sa.Column("thread_id", ID, nullable=False),
    sa.Column("run_id", ID, nullable=False),
    sa.Column("created_at", UTCDateTime, nullable=False, index=True),
)

# A running run's answer so far, saved in batches by the replica driving it, so any
# replica can serve "the stream after offset N" (routes/run_stream.py). One row per
# run, overwritten; once the run has ended its text is emptied (the answer is in the
# log then) and the row keeps only the attempt that produced it.
run_progress = sa.Table(
    "run_progress",
    metadata,
    sa.Column("run_id", ID, primary_key=True),
    sa.Column("thread_id", ID, nullable=False),
    # 1 for a run's first generation, more after each hand-over that generates again.
    sa.Column("attempt", sa.Integer, nullable=False),
    sa.Column("text", sa.Text, nullable=False),
    sa.Column("updated_at", UTCDateTime, nullable=False),
)
