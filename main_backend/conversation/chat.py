"""The chat service: one request becomes one run, at most once per idempotency key.

A request for a busy thread is refused, or queued behind its runs (`if_busy`); a
queued run starts on whichever replica is there when its turn comes (runner.py).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Literal

from loguru import logger

from main_backend.conversation.graph import RunEnded, ended_from_events, terminal_events
from main_backend.conversation.idempotency import IdempotencyKeys, KeyRecord
from main_backend.conversation.ids import run_queued_id, run_started_id
from main_backend.conversation.progress import RunProgress
from main_backend.conversation.runner import RunHandle, TurnRunner
from main_backend.conversation.runs import owned_run
from main_backend.conversation.turns import (
    ChatCommand,
    QueuePlan,
    new_run_id,
    owned_thread,
    plan_turn,
    queued_run_end,
)
from main_backend.errors import (
    IdempotencyKeyReused,
    NoActiveRun,
    RequestInProgress,
    VersionConflict,
)
from main_backend.events.store import EventStore
from main_backend.events.types import CancelledBy

# A key whose request never reached the log (its replica died in between) is
# given up after this long, so the client can use it again.
STALE_KEY = timedelta(seconds=30)
# Plans of one request against a thread that keeps moving, before giving up.
PLAN_ATTEMPTS = 5


@dataclass(frozen=True, slots=True)
class Repeat:
    """A repeated request: the first one's outcome, read back from the log."""

    ended: RunEnded
    # The generation of the run that wrote its answer (streams.py's event ids).
    attempt: int = 1


@dataclass(frozen=True, slots=True)
class Accepted:
    """A run that is not driven here (yet): queued behind its thread's runs, or a
    background request's repeat while its run goes on. Its stream and its end are
    read from the database (streams.py), whichever replica drives it."""

    thread_id: str
    run_id: str
    status: str


class ChatService:
    def __init__(
        self,
        store: EventStore,
        runner: TurnRunner,
        keys: IdempotencyKeys,
        progress: RunProgress,
    ) -> None:
        self.store = store
        self.runner = runner
        self.keys = keys
        self.progress = progress
        self._cancelling: set[asyncio.Task[None]] = set()

    async def start(
        self,
        command: ChatCommand,
        idempotency_key: str | None,
        digest: str,
        *,
        background: bool = False,
    ) -> RunHandle | Repeat | Accepted:
        """Start the run (or queue it); a repeat of a request (same key) is answered
        with what the first one started. A background request's repeat while its run
        goes on is accepted again; any other repeat then is `RequestInProgress`."""
        if idempotency_key is not None:
            record = await self.keys.get(command.user, idempotency_key)
            if record is not None:
                repeat = await self._repeat(
                    command.user, idempotency_key, digest, record, background
                )
                if repeat is not None:
                    return repeat
        run_id = new_run_id()
        claimed = False
        for attempt in range(1, PLAN_ATTEMPTS + 1):
            plan = await plan_turn(self.store, command, run_id)
            if idempotency_key is not None and not claimed:
                earlier = await self.keys.claim(
                    command.user, idempotency_key, digest, plan.thread_id, run_id
                )
                if earlier is not None:  # a concurrent twin claimed it first
                    repeat = await self._repeat(
                        command.user, idempotency_key, digest, earlier, background
                    )
                    if repeat is not None:
                        return repeat
                    raise RequestInProgress()
                claimed = True
            try:
                if isinstance(plan, QueuePlan):
                    return await self._enqueue(plan)
                return await self.runner.start(plan, command.request_id, command.user)
            except VersionConflict:
                # The thread moved on between planning and appending (a concurrent
                # turn, a rename). Unless the client pinned a version, look again:
                # a run that started meanwhile now answers thread_busy.
                if command.expected_version is None and attempt < PLAN_ATTEMPTS:
                    continue
                await self._forget(command.user, idempotency_key)
                raise
            except BaseException:
                await self._forget(command.user, idempotency_key)
                raise
        raise AssertionError("unreachable")

    async def _enqueue(self, plan: QueuePlan) -> Accepted:
        """Queue the run (its input waits in `run.queued`, out of the history), then ask
        the active run to stop for interrupt and rollback."""
        await self.store.append(plan.thread_id, [*plan.head, plan.event], plan.expected_version)
        if plan.stop_run_id is not None and plan.stop_reason is not None:
            await self._stop(plan.thread_id, plan.stop_run_id, plan.stop_reason)
        # The thread may be idle with its queue waiting (its owner was at the cap).
        self.runner.start_queued_soon(plan.thread_id)
        return Accepted(plan.thread_id, plan.run_id, "pending")

    async def cancel(
        self,
        user: str,
        thread_id: str,
        run_id: str | None = None,
        reason: Literal["user", "rollback"] = "user",
    ) -> str:
        """Stop the thread's active run (only if it is `run_id`, when given) on whichever
        replica drives it (its lease carries the request there; here it stops at once),
        or take a queued `run_id` out of the queue; the run's id. A "rollback" also takes
        the run's input and partial answer out of the history, as `if_busy` rollback does."""
        if run_id is not None:
            run = await owned_run(self.store, user, thread_id, run_id)
            if run.status == "pending" and await self._cancel_queued(thread_id, run_id):
                return run_id
            if run.status not in ("pending", "running"):
                raise NoActiveRun(thread_id, run_id, run.status)
        thread = await owned_thread(self.store, thread_id, user)
        if thread.active_run_id is None or run_id not in (None, thread.active_run_id):
            raise NoActiveRun(thread_id, run_id)
        await self._stop(thread_id, thread.active_run_id, reason)
        return thread.active_run_id

    def cancel_soon(self, user: str, thread_id: str, run_id: str) -> None:
        """Cancel the run in the background (its streaming client went away with
        `on_disconnect: cancel`; what called this is being torn down)."""
        task = asyncio.create_task(self._cancel_left(user, thread_id, run_id))
        self._cancelling.add(task)
        task.add_done_callback(self._cancelling.discard)

    async def close(self, grace_seconds: float = 2.0) -> None:
        """Let the cancels of clients that left finish (within `grace_seconds`), then
        stop any still going: none outlives the app (its database is closed next)."""
        pending = set(self._cancelling)
        if not pending:
            return
        _, late = await asyncio.wait(pending, timeout=grace_seconds)
        for task in late:
            task.cancel()
        await asyncio.gather(*late, return_exceptions=True)

    async def _cancel_left(self, user: str, thread_id: str, run_id: str) -> None:
        try:
            await self.cancel(user, thread_id, run_id)
            logger.info("run {} cancelled: its streaming client went away", run_id)
        except NoActiveRun:
            pass  # it ended meanwhile
        except Exception as exc:
            logger.warning("could not cancel run {} after its client left: {}", run_id, exc)

    async def _stop(self, thread_id: str, run_id: str, reason: CancelledBy) -> None:
        await self.runner.leases.request_cancel(run_id, thread_id, reason)
        self.runner.request_local_cancel(run_id, reason)

    async def _cancel_queued(self, thread_id: str, run_id: str) -> bool:
        """End a queued run before it starts; False if it has started meanwhile."""
        while True:
            thread = await self.store.get_thread(thread_id)
            if thread is None or run_id not in thread.queued_run_ids:
                return False
            cancelled = queued_run_end(run_id, {"request_id": None, "user": thread.owner}, None)
            try:
                await self.store.append(thread_id, [cancelled], thread.version)
                return True
            except VersionConflict:
                continue  # the queue moved (a start, another queued run): look again

    async def _forget(self, user: str, key: str | None) -> None:
        if key is not None:
            await self.keys.release(user, key)

    async def _repeat(
        self, user: str, key: str, digest: str, record: KeyRecord, background: bool
    ) -> Repeat | Accepted | None:
        if record.request_hash != digest:
            raise IdempotencyKeyReused()
        stored = await terminal_events(self.store, record.thread_id, record.run_id)
        if stored:
            attempt = await self.progress.attempt(record.run_id)
            return Repeat(ended_from_events(stored, None), attempt)
        started = await self.store.get_event(run_started_id(record.run_id))
        queued = started or await self.store.get_event(run_queued_id(record.run_id))
        if queued is None and datetime.now(UTC) - record.created_at > STALE_KEY:
            await self.keys.release(user, key)
            return None
        if background and queued is not None:
            status = "running" if started is not None else "pending"
            return Accepted(record.thread_id, record.run_id, status)
        raise RequestInProgress()
