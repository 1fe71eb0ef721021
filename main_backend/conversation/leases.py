"""Run leases: which replica drives which run, until when, and cancel requests.

The replica that starts a run holds its lease and renews it while the run is
in flight. A lease that is not renewed expires, and any replica may then take
the run over (crash-resume). Cancel requests are a flag on the lease, so they
reach the run whichever replica drives it.

The leases are also where each user's runs in flight are counted, against
MAX_ACTIVE_RUNS_PER_USER: a new run's lease is taken before anything of the run
is appended, so a run refused here writes nothing.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncConnection

from main_backend.conversation.ids import terminal_event_id
from main_backend.conversation.tables import run_leases
from main_backend.db import Database
from main_backend.errors import TooManyActiveRuns
from main_backend.events.tables import events, runs, threads
from main_backend.events.types import CancelledBy, read_cancelled_by

# Any fixed number: the first key of the per-user Postgres advisory locks that
# order lease takes (two-integer keys; checkpoints.PRUNE_LOCK_CLASS is another class).
OWNER_LOCK_CLASS = 5_202_612
# Runs last seconds to minutes and nothing tells when the user's next one ends:
# a short wait before trying again.
ACTIVE_RUNS_RETRY_AFTER = 5.0


@dataclass(frozen=True, slots=True)
class OrphanRun:
    thread_id: str
    run_id: str


def _now() -> datetime:
    return datetime.now(UTC)


def _owner_of(thread_id: str) -> sa.ColumnElement[str]:
    """The thread's owner as a value to insert ("" if the read model has no such thread)."""
    owner = sa.select(threads.c.owner).where(threads.c.thread_id == thread_id)
    return sa.func.coalesce(owner.scalar_subquery(), "")


async def _active_count(conn: AsyncConnection, owner: str, now: datetime) -> int:
    """The owner's runs in flight, read inside the transaction that takes a lease.

    A run counts from its lease to its terminal event: while the read model
    says it is active (a run whose replica died keeps counting until it is
    resumed or closed), and before that while its lease is live and it has not
    ended (its input not yet recorded). A lease left behind by a run that ended
    (not yet released) or that never got its input recorded (its replica died
    before the first append) and has expired counts for nothing.
    """
    rows = (
        await conn.execute(
            sa.select(
                run_leases.c.run_id,
                run_leases.c.expires_at,
                threads.c.thread_id.is_not(None).label("active"),
            )
            .select_from(
                run_leases.outerjoin(threads, threads.c.active_run_id == run_leases.c.run_id)
            )
            .where(run_leases.c.owner == owner)
        )
    ).all()
    active = sum(1 for row in rows if row.active)
    pending = {
        terminal_event_id(row.run_id): row.run_id
        for row in rows
        if not row.active and row.expires_at > now
    }
    if pending:
        ended = await conn.scalar(
            sa.select(sa.func.count()).select_from(events).where(events.c.event_id.in_(pending))
        )
        active += len(pending) - (ended or 0)
    return active


class RunLeases:
    def __init__(
        self, db: Database, replica_id: str, lease_seconds: float, max_active_per_owner: int
    ) -> None:
        self.db = db
        self.replica_id = replica_id
        self.ttl = timedelta(seconds=lease_seconds)
        self.max_active_per_owner = max_active_per_owner

    async def take(self, run_id: str, thread_id: str, owner: str) -> None:
        """Hold the lease of a run this replica is starting, within the owner's cap.

        Raises TooManyActiveRuns when the owner has MAX_ACTIVE_RUNS_PER_USER runs in
        flight. The count and the insert are one transaction that holds the owner's
        lock (SQLite: the write lock, BEGIN IMMEDIATE; Postgres: an advisory lock
        per owner), so replicas taking leases at once cannot both pass the cap.
        """
        async with self.db.writer.begin() as conn:
            if conn.dialect.name == "postgresql":
                await conn.execute(
                    sa.select(
                        sa.func.pg_advisory_xact_lock(OWNER_LOCK_CLASS, sa.func.hashtext(owner))
                    )
                )
            now = _now()
            active = await _active_count(conn, owner, now)
            if active >= self.max_active_per_owner:
                raise TooManyActiveRuns(self.max_active_per_owner, ACTIVE_RUNS_RETRY_AFTER)
            await conn.execute(
                run_leases.insert().values(
                    run_id=run_id,
                    thread_id=thread_id,
                    owner=owner,
                    replica_id=self.replica_id,
                    expires_at=now + self.ttl,
                    cancel_requested=False,
                    resumes=0,
                )
            )

    async def claim(self, run_id: str, thread_id: str) -> int | None:
        """Take over a run whose lease expired (or never was written).

        Returns how many times the run has been taken over, or None when
        another replica holds a live lease.
        """
        now = _now()
        async with self.db.writer.begin() as conn:
            row = (
                await conn.execute(
                    sa.select(run_leases.c.expires_at, run_leases.c.resumes).where(
                        run_leases.c.run_id == run_id
                    )
                )
            ).first()
            if row is None:
                try:
                    await conn.execute(
                        run_leases.insert().values(
                            run_id=run_id,
                            thread_id=thread_id,
                            owner=_owner_of(thread_id),
                            replica_id=self.replica_id,
                            expires_at=now + self.ttl,
                            cancel_requested=False,
                            resumes=1,
                        )
                    )
                except IntegrityError:
                    return None
                return 1
            if row.expires_at > now:
                return None
            updated = await conn.execute(
                run_leases.update()
                .where(run_leases.c.run_id == run_id, run_leases.c.expires_at <= now)
                .values(
                    replica_id=self.replica_id, expires_at=now + self.ttl, resumes=row.resumes + 1
                )
            )
            return row.resumes + 1 if updated.rowcount == 1 else None

    async def renew(self, run_ids: Collection[str]) -> dict[str, CancelledBy]:
        """Extend this replica's leases; returns the runs asked to cancel, and by whom."""
        if not run_ids:
            return {}
        async with self.db.writer.begin() as conn:
            await conn.execute(
                run_leases.update()
                .where(run_leases.c.run_id.in_(run_ids), run_leases.c.replica_id == self.replica_id)
                .values(expires_at=_now() + self.ttl)
            )
            rows = await conn.execute(
                sa.select(run_leases.c.run_id, run_leases.c.cancel_reason).where(
                    run_leases.c.run_id.in_(run_ids), run_leases.c.cancel_requested
                )
            )
            return {row.run_id: read_cancelled_by(row.cancel_reason) for row in rows}

    async def request_cancel(
        self, run_id: str, thread_id: str, reason: CancelledBy = "user"
    ) -> None:
        """Ask the run to stop, whichever replica drives it. A rollback stays a rollback
        whatever is asked after it: its request relies on the run's input going."""
        async with self.db.writer.begin() as conn:
            updated = await conn.execute(
                run_leases.update()
                .where(run_leases.c.run_id == run_id)
                .values(
                    cancel_requested=True,
                    cancel_reason=sa.case(
                        (run_leases.c.cancel_reason == "rollback", "rollback"), else_=reason
                    ),
                )
            )
            if updated.rowcount == 0:
                # The run lost its lease row (crash before it was written): an
                # expired lease that carries the request to whoever resumes it.
                await conn.execute(
                    run_leases.insert().values(
                        run_id=run_id,
                        thread_id=thread_id,
                        owner=_owner_of(thread_id),
                        replica_id="",
                        expires_at=_now(),
                        cancel_requested=True,
                        cancel_reason=reason,
                        resumes=0,
                    )
                )

    async def cancel_requested(self, run_id: str) -> CancelledBy | None:
        """Who asked the run to stop, or None if nobody has."""
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(run_leases.c.cancel_requested, run_leases.c.cancel_reason).where(
                        run_leases.c.run_id == run_id
                    )
                )
            ).first()
        return (
            read_cancelled_by(row.cancel_reason)
            if row is not None and row.cancel_requested
            else None
        )

    async def expire(self, run_ids: Collection[str]) -> None:
        """Give this replica's runs up now, so another replica takes them over at once."""
        async with self.db.writer.begin() as conn:
            await conn.execute(
                run_leases.update()
                .where(run_leases.c.run_id.in_(run_ids), run_leases.c.replica_id == self.replica_id)
                .values(expires_at=_now())
            )

    async def release(self, run_id: str) -> None:
        async with self.db.lone_writer.begin() as conn:
            await conn.execute(run_leases.delete().where(run_leases.c.run_id == run_id))

    async def orphans(self, limit: int = 50) -> list[OrphanRun]:
        """Active runs (per the read model) whose lease expired or is missing."""
        query = (
            sa.select(threads.c.thread_id, threads.c.active_run_id)
            .select_from(
                threads.outerjoin(run_leases, run_leases.c.run_id == threads.c.active_run_id)
            )
            .where(
                threads.c.active_run_id.is_not(None),
                sa.or_(run_leases.c.run_id.is_(None), run_leases.c.expires_at <= _now()),
            )
            .limit(limit)
        )
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(query)
            return [OrphanRun(row.thread_id, row.active_run_id) for row in rows]

    async def waiting_threads(self, limit: int = 50) -> list[str]:
        """Threads with a queued run and no active one: their queue waits for a start
        (its replica died between a run's end and the next start, or the owner was at
        MAX_ACTIVE_RUNS_PER_USER then)."""
        query = (
            sa.select(runs.c.thread_id)
            .select_from(runs.join(threads, threads.c.thread_id == runs.c.thread_id))
            # Inlined, so both engines match the partial index ix_runs_pending.
            .where(
                runs.c.status == sa.literal_column("'pending'"), threads.c.active_run_id.is_(None)
            )
            .distinct()
            .limit(limit)
        )
        async with self.db.engine.connect() as conn:
            return list((await conn.scalars(query)).all())

    async def stale(self, limit: int = 50) -> list[OrphanRun]:
        """Leases expired a lease time ago whose run is not active: its replica died
        before the run's input was recorded, or after its end was. The extra lease
        time spares a replica that is merely late renewing and about to record it."""
        query = (
            sa.select(run_leases.c.thread_id, run_leases.c.run_id)
            .where(run_leases.c.expires_at <= _now() - self.ttl, ~_is_active())
            .limit(limit)
        )
        async with self.db.engine.connect() as conn:
            rows = await conn.execute(query)
            return [OrphanRun(row.thread_id, row.run_id) for row in rows]

    async def release_stale(self, run_id: str) -> None:
        """Release a lease `stale` found, unless it has been renewed or its run started since."""
        async with self.db.writer.begin() as conn:
            await conn.execute(
                run_leases.delete().where(
                    run_leases.c.run_id == run_id,
                    run_leases.c.expires_at <= _now() - self.ttl,
                    ~_is_active(),
                )
            )


def _is_active() -> sa.Exists:
    """The lease's run is the active run of a thread (per the read model)."""
    return sa.exists().where(threads.c.active_run_id == run_leases.c.run_id)
