"""The chat service: one request becomes one run, at most once per idempotency key."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from main_backend.conversation.graph import RunEnded, ended_from_events, terminal_events
from main_backend.conversation.idempotency import IdempotencyKeys, KeyRecord
from main_backend.conversation.ids import run_started_id
from main_backend.conversation.progress import RunProgress
from main_backend.conversation.runner import RunHandle, TurnRunner
from main_backend.conversation.runs import owned_run
from main_backend.conversation.turns import ChatCommand, new_run_id, owned_thread, plan_turn
from main_backend.errors import (
    IdempotencyKeyReused,
    NoActiveRun,
    RequestInProgress,
    VersionConflict,
)
from main_backend.events.store import EventStore

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

    async def start(
        self, command: ChatCommand, idempotency_key: str | None, digest: str
    ) -> RunHandle | Repeat:
        if idempotency_key is not None:
            record = await self.keys.get(command.user, idempotency_key)
            if record is not None:
                repeat = await self._repeat(command.user, idempotency_key, digest, record)
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
                    repeat = await self._repeat(command.user, idempotency_key, digest, earlier)
                    if repeat is not None:
                        return repeat
                    raise RequestInProgress()
                claimed = True
            try:
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

    async def cancel(self, user: str, thread_id: str, run_id: str | None = None) -> str:
        """Stop the thread's active run (only if it is `run_id`, when given) on whichever
        replica drives it (its lease carries the request there; here it stops at once);
        the run's id."""
        if run_id is not None:
            run = await owned_run(self.store, user, thread_id, run_id)
            if run.status != "running":
                raise NoActiveRun(thread_id, run_id, run.status)
        thread = await owned_thread(self.store, thread_id, user)
        if thread.active_run_id is None or run_id not in (None, thread.active_run_id):
            raise NoActiveRun(thread_id, run_id)
        run_id = thread.active_run_id
        await self.runner.leases.request_cancel(run_id, thread_id)
        self.runner.request_local_cancel(run_id)
        return run_id

    async def _forget(self, user: str, key: str | None) -> None:
        if key is not None:
            await self.keys.release(user, key)

    async def _repeat(self, user: str, key: str, digest: str, record: KeyRecord) -> Repeat | None:
        if record.request_hash != digest:
            raise IdempotencyKeyReused()
        stored = await terminal_events(self.store, record.thread_id, record.run_id)
        if stored:
            attempt = await self.progress.attempt(record.run_id)
            return Repeat(ended_from_events(stored, None), attempt)
        started = await self.store.get_event(run_started_id(record.run_id))
        if started is None and datetime.now(UTC) - record.created_at > STALE_KEY:
            await self.keys.release(user, key)
            return None
        raise RequestInProgress()
