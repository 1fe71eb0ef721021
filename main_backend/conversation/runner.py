"""Drives turn graphs in the background, apart from the requests that start them.

A run belongs to no HTTP request: a client that disconnects only stops
listening. This replica renews the leases of the runs it drives, passes
cancel requests to them, and takes over runs whose replica stopped renewing
(crash-resume): from the run's checkpoint when it has one, else from its
`run.started` event. A run that cannot be resumed is closed as `interrupted`;
one whose input was never recorded is forgotten, with nothing appended.

A thread's queued runs (`if_busy`) start one at a time: the replica that ends a
run starts the thread's next one at once, and the sweeper starts the queue of any
idle thread whose next start never came (its replica died in between, or the
owner was at MAX_ACTIVE_RUNS_PER_USER). Any replica may try; the run's lease and
the thread's version let exactly one succeed.

A run that fails here after its input was recorded (the database stopped
answering mid-run) is handed over at once rather than when its lease would
expire: its lease is expired and the sweeper looks again every `poll_seconds`
until that is done, so the run resumes (and its thread takes turns again) as
soon as the database answers, however long the outage lasted.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from functools import partial
from typing import Any, cast

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.graph.state import CompiledStateGraph
from loguru import logger
from sqlalchemy.exc import IntegrityError

from main_backend.conversation.checkpoints import drop_run, prune_ended_run, run_config
from main_backend.conversation.graph import (
    RunDelta,
    RunEnded,
    RunStarted,
    TurnContext,
    TurnState,
    append_outcome,
    fresh_state,
    recorded_input,
)
from main_backend.conversation.ids import run_queued_id, run_started_id
from main_backend.conversation.leases import OrphanRun, RunLeases
from main_backend.conversation.progress import TextBuffer
from main_backend.conversation.turns import TurnPlan, plan_queued_start, queued_run_end
from main_backend.db import is_database_unavailable
from main_backend.errors import InvalidEvent, TooManyActiveRuns, VersionConflict
from main_backend.events.fold import ThreadState
from main_backend.events.store import EventStore
from main_backend.events.types import CancelledBy

# Tries at starting a thread's next queued run while the thread keeps moving.
START_ATTEMPTS = 5

RunEvent = RunStarted | RunDelta | RunEnded


class RunHandle:
    """One run as this replica drives it: its events so far, for any number of listeners.

    The answer is kept as its text (a `TextBuffer`), not as its deltas: a listener gets
    what came since it last looked as one delta (streams.py: deltas may be cut
    differently on each connection; their text joined is the same)."""

    def __init__(self, thread_id: str, run_id: str, context: TurnContext) -> None:
        self.thread_id = thread_id
        self.run_id = run_id
        # Which generation of the run this replica drives (streams.py's event ids).
        self.attempt = context.attempt
        self.context = context
        self.cancel = context.cancel
        self.started: RunStarted | None = None
        self.text = TextBuffer()
        self.ended: RunEnded | None = None
        self.error: BaseException | None = None
        self.finished = False
        self._changed = asyncio.Condition()
        self.task: asyncio.Task[None] | None = None

    async def publish(self, event: RunEvent) -> None:
        async with self._changed:
            if isinstance(event, RunStarted):
                self.started = event
            elif isinstance(event, RunDelta):
                self.text.add(event.text)
            else:
                self.ended = event
            self._changed.notify_all()

    async def finish(self, error: BaseException | None = None) -> None:
        async with self._changed:
            self.error = error
            self.finished = True
            self._changed.notify_all()

    async def wait_started(self) -> RunStarted:
        """The recorded input, or the error that refused it (conflict, busy…)."""
        async with self._changed:
            await self._changed.wait_for(lambda: self.started is not None or self.finished)
        if self.started is not None:
            return self.started
        assert self.error is not None
        raise self.error

    async def wait_ended(self) -> RunEnded | None:
        async with self._changed:
            await self._changed.wait_for(lambda: self.finished)
        return self.ended

    def _has_news(self, started: bool, offset: int, ended: bool) -> bool:
        return (
            (self.started is not None and not started)
            or self.text.length > offset
            or (self.ended is not None and not ended)
            or self.finished
        )

    async def follow(self) -> AsyncIterator[RunEvent]:
        """Every event from the first, then each as it comes, until the run is over."""
        started = ended = False
        offset = 0
        while True:
            async with self._changed:
                await self._changed.wait_for(partial(self._has_news, started, offset, ended))
                fresh: list[RunEvent] = []
                if self.started is not None and not started:
                    fresh.append(self.started)
                    started = True
                if self.text.length > offset:
                    fresh.append(RunDelta(self.text.since(offset)))
                    offset = self.text.length
                if self.ended is not None and not ended:
                    fresh.append(self.ended)
                    ended = True
                done = self.finished
            for event in fresh:
                yield event
            if done:
                return


class TurnRunner:
    def __init__(
        self,
        graph: CompiledStateGraph[TurnState, TurnContext, TurnState, TurnState],
        checkpointer: BaseCheckpointSaver[str],
        store: EventStore,
        leases: RunLeases,
        *,
        poll_seconds: float,
        sweep_seconds: float,
        max_resumes: int,
        on_end: Callable[[RunEnded], None] | None = None,
    ) -> None:
        self.graph = graph
        self.checkpointer = checkpointer
        self.store = store
        self.leases = leases
        self.poll_seconds = poll_seconds
        self.sweep_seconds = sweep_seconds
        self.max_resumes = max_resumes
        self.on_end = on_end
        self.local: dict[str, RunHandle] = {}
        self._loops: list[asyncio.Task[None]] = []
        # Runs that failed here with their lease still ours, to hand over at once.
        self._abandoned: set[str] = set()
        self._wake_sweeper = asyncio.Event()
        # Starts of queued runs in flight (a reference each, so none is collected early).
        self._starting: set[asyncio.Task[None]] = set()

    async def start(self, plan: TurnPlan, request_id: str | None, user: str) -> RunHandle:
        """Start a new run; returns once its input is recorded (or raises why not)."""
        await self.leases.take(plan.run_id, plan.thread_id, user)
        handle = self._launch(
            plan.thread_id,
            plan.run_id,
            {
                "thread_id": plan.thread_id,
                "run_id": plan.run_id,
                "request_id": request_id,
                "user": user,
            },
            TurnContext(plan=plan),
        )
        await handle.wait_started()
        return handle

    def _launch(
        self, thread_id: str, run_id: str, state: TurnState | None, context: TurnContext
    ) -> RunHandle:
        handle = RunHandle(thread_id, run_id, context)
        self.local[run_id] = handle
        handle.task = asyncio.create_task(self._drive(handle, state, context), name=f"run {run_id}")
        return handle

    async def _drive(
        self, handle: RunHandle, state: TurnState | None, context: TurnContext
    ) -> None:
        config = run_config(handle.thread_id, handle.run_id)
        # The thread's latest checkpoint may be another run's: start from a clean state.
        fresh = None if state is None else fresh_state(state)
        error: BaseException | None = None
        try:
            with logger.contextualize(thread_id=handle.thread_id, run_id=handle.run_id):
                await self._stream(handle, fresh, config, context)
        except Exception as exc:
            error = exc
            # A new run's refused input (busy, conflict…) is its caller's to report;
            # anything else, and every failure of a resumed run, is logged here.
            if handle.started is not None or context.plan is None:
                logger.exception(
                    "run {} failed before its outcome was recorded; it will be resumed",
                    handle.run_id,
                )
        finally:
            self.local.pop(handle.run_id, None)
            # Refused input or a recorded end: nothing left to resume.
            if handle.ended is not None or (
                handle.started is None and state is not None and not state.get("recorded")
            ):
                await self._cleanup(handle)
            elif error is not None:
                self._abandoned.add(handle.run_id)
                self._wake_sweeper.set()
            await handle.finish(error)
            if handle.ended is not None:
                self.start_queued_soon(handle.thread_id)

    async def _stream(
        self, handle: RunHandle, state: TurnState | None, config: Any, context: TurnContext
    ) -> None:
        # One checkpoint, at the exit: a crash before it resumes from the run's
        # run.started (the log), which is all a checkpoint per step would have offered.
        async for event in self.graph.astream(
            state, config, context=context, stream_mode="custom", durability="exit"
        ):
            # The custom stream yields exactly what the nodes wrote: RunEvents.
            await handle.publish(cast(RunEvent, event))
            if isinstance(event, RunEnded) and self.on_end is not None:
                self.on_end(event)

    async def _cleanup(self, handle: RunHandle) -> None:
        try:
            await self._forget(handle.thread_id, handle.run_id, recorded=handle.ended is not None)
        except Exception:
            logger.exception("could not clean up after run {}", handle.run_id)

    async def _forget(self, thread_id: str, run_id: str, *, recorded: bool) -> None:
        """Prune a finished run's checkpoints, then release its lease: the lease goes
        last, so a crash in between leaves it to mark the run for `collect_stale`."""
        await self._prune(thread_id, run_id, recorded=recorded)
        await self.leases.release(run_id)

    async def _prune(self, thread_id: str, run_id: str, *, recorded: bool) -> None:
        """A run whose input was recorded keeps its last checkpoint as the thread's
        state, and the thread's older checkpoints go (never a newer run's: one may have
        started already). One never recorded describes a run the log does not know:
        only its own checkpoints go."""
        if recorded:
            await prune_ended_run(self.checkpointer, thread_id, run_id)
        else:
            await drop_run(self.checkpointer, thread_id, run_id)

    def request_local_cancel(self, run_id: str, reason: CancelledBy = "user") -> bool:
        handle = self.local.get(run_id)
        if handle is not None and not handle.cancel.is_set():
            handle.context.cancel_reason = reason
            handle.cancel.set()
        elif handle is not None and reason == "rollback":
            handle.context.cancel_reason = reason  # a rollback stays one (leases.py)
        return handle is not None

    # Queued runs -------------------------------------------------------------------------

    def start_queued_soon(self, thread_id: str) -> None:
        """Start the thread's next queued run, if it has one and is idle, in the background."""
        task = asyncio.create_task(self._start_queued_logged(thread_id), name="start queued run")
        self._starting.add(task)
        task.add_done_callback(self._starting.discard)

    async def _start_queued_logged(self, thread_id: str) -> None:
        try:
            await self.start_queued(thread_id)
        except Exception as exc:
            # The sweeper looks again (waiting_threads) once the database answers.
            logger.warning("could not start the next queued run of thread {}: {}", thread_id, exc)

    async def start_queued(self, thread_id: str) -> RunHandle | None:
        """Start the oldest queued run of the thread if the thread is idle: its input is
        recorded now, as a run's. None when there is nothing to start, or another replica
        started it, or the owner is at MAX_ACTIVE_RUNS_PER_USER (the sweeper tries again)."""
        for _ in range(START_ATTEMPTS):
            thread = await self.store.get_thread(thread_id)
            if thread is None or thread.active_run_id is not None or not thread.queued_run_ids:
                return None
            run_id = thread.queued_run_ids[0]
            if run_id in self.local:
                return None
            try:
                plan = await self._queued_plan(thread, run_id)
                if plan is None:
                    continue  # closed: look at the next one
                return await self.start(plan, plan.request_id, thread.owner)
            except VersionConflict:
                continue  # the thread moved (a cancel, another queued run): look again
            except IntegrityError:
                return None  # another replica holds the run's lease: it is starting it
            except TooManyActiveRuns:
                logger.info("queued run {} waits: its owner is at the cap of runs", run_id)
                return None
        return None

    async def _queued_plan(self, thread: ThreadState, run_id: str) -> TurnPlan | None:
        """The plan that starts the queued run, or None once it is closed instead: its
        thread was deleted (cancelled) or its stored input cannot be read (failed)."""
        if thread.deleted:
            await self._end_queued(thread, run_id, None)
            return None
        queued = await self.store.get_event(run_queued_id(run_id))
        try:
            if queued is None or queued.thread_id != thread.thread_id:
                raise InvalidEvent(f"queued run {run_id} has no run.queued event")
            return plan_queued_start(thread, queued)
        except InvalidEvent as exc:
            logger.error("queued run {} cannot start and is closed: {}", run_id, exc)
            await self._end_queued(thread, run_id, str(exc))
            return None

    async def _end_queued(self, thread: ThreadState, run_id: str, problem: str | None) -> None:
        """Close a queued run that will never start: cancelled (its thread was deleted)
        or failed (its stored input cannot be read)."""
        event = queued_run_end(run_id, {"request_id": None, "user": None}, problem)
        await self.store.append(thread.thread_id, [event], thread.version)

    # Background loops -------------------------------------------------------------------

    def start_background(self) -> None:
        self._loops = [
            asyncio.create_task(self._heartbeat(), name="run heartbeat"),
            asyncio.create_task(self._sweep(), name="run sweeper"),
        ]

    async def stop(self, grace_seconds: float = 0) -> None:
        """Let runs in flight finish for up to `grace_seconds`, then stop driving the
        rest: their leases are expired so another replica resumes them at once.

        From the start no run of another replica is taken over (this one is leaving,
        and must not take back a run it hands over); the heartbeat goes on renewing
        the leases of the runs it still drives."""
        for task in self._loops:
            if task.get_name() != "run heartbeat":
                task.cancel()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace_seconds
        waited = False
        # Again while runs remain: one may have started while the others were awaited.
        while (runs := [h.task for h in self.local.values() if h.task]) and (
            left := deadline - loop.time()
        ) > 0:
            if not waited:
                logger.info("waiting up to {}s for {} run(s) to finish", grace_seconds, len(runs))
                waited = True
            await asyncio.wait(runs, timeout=left)
        # Those that failed here and wait for the sweeper to hand them over too.
        unfinished = [*self.local, *self._abandoned]
        # Starts of queued runs in flight too: none may outlive the database they use.
        tasks = [
            *self._loops,
            *self._starting,
            *(h.task for h in self.local.values() if h.task),
        ]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        if unfinished:
            logger.warning("handing {} unfinished run(s) over to other replicas", len(unfinished))
            with contextlib.suppress(Exception):
                await self.leases.expire(unfinished)

    async def _heartbeat(self) -> None:
        while True:
            await asyncio.sleep(self.poll_seconds)
            try:
                for run_id, reason in (await self.leases.renew(list(self.local))).items():
                    self.request_local_cancel(run_id, reason)
            except Exception:
                logger.exception("could not renew run leases")

    async def _sweep(self) -> None:
        while True:
            failed = False
            try:
                await self._hand_over_abandoned()
                await self.resume_orphans()
                await self.collect_stale()
                await self.start_waiting()
            except Exception as exc:
                failed = True
                if is_database_unavailable(exc):
                    logger.warning(
                        "could not look for runs to resume: {}: {}", type(exc).__name__, exc
                    )
                else:
                    logger.exception("could not look for runs to resume")
            # Until the database answers again, look often: a run it interrupted
            # resumes as soon as it can, not a sweep period later.
            pause = self.poll_seconds if failed or self._abandoned else self.sweep_seconds
            self._wake_sweeper.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake_sweeper.wait(), pause)

    async def _hand_over_abandoned(self) -> None:
        if self._abandoned:
            run_ids = list(self._abandoned)
            await self.leases.expire(run_ids)
            self._abandoned.difference_update(run_ids)

    async def resume_orphans(self) -> int:
        resumed = 0
        for orphan in await self.leases.orphans():
            if orphan.run_id in self.local:
                continue
            resumes = await self.leases.claim(orphan.run_id, orphan.thread_id)
            if resumes is None:
                continue
            resumed += 1
            try:
                await self._resume(orphan, resumes)
            except Exception:
                # Claimed but not driven (the database failed again): hand it over again.
                self._abandoned.add(orphan.run_id)
                raise
        return resumed

    async def start_waiting(self) -> int:
        """Start the queues of idle threads whose next start never came."""
        started = 0
        for thread_id in await self.leases.waiting_threads():
            started += await self.start_queued(thread_id) is not None
        return started

    async def collect_stale(self) -> int:
        """Forget the runs whose replica died before their input was recorded (nothing
        to resume, nothing to append) or after their end was (nothing left to do)."""
        stale = await self.leases.stale()
        for run in stale:
            if run.run_id in self.local:
                continue
            logger.warning(
                "forgetting run {} of thread {}: its replica stopped before it "
                "started or after it ended",
                run.run_id,
                run.thread_id,
            )
            # Not active: its input was never recorded, or its end was. An ended run's
            # last checkpoint stays the thread's latest at whatever step it was saved
            # (its replica may have died after the end's append, before the final save).
            recorded = await self.store.get_event(run_started_id(run.run_id)) is not None
            await self._prune(run.thread_id, run.run_id, recorded=recorded)
            await self.leases.release_stale(run.run_id)
        return len(stale)

    async def _resume(self, orphan: OrphanRun, resumes: int) -> None:
        thread_id, run_id = orphan.thread_id, orphan.run_id
        logger.warning("resuming run {} of thread {} (take-over {})", run_id, thread_id, resumes)
        started = await self.store.get_event(run_started_id(run_id))
        if started is None:
            # Its input was never recorded (the thread names it active only from its
            # run.started on): there is no run to end, and nothing may be appended.
            await self._forget(thread_id, run_id, recorded=False)
            return
        if resumes > self.max_resumes:
            await self._close_interrupted(thread_id, run_id)
            return
        snapshot = await self.graph.aget_state(run_config(thread_id, run_id))
        state: TurnState | None
        # `tasks`, not `next`: a step whose writes were saved before its checkpoint is
        # left out of `next` but still pending; continuing applies its writes.
        if snapshot.tasks and snapshot.values.get("run_id") == run_id:
            state = None  # continue from the checkpoint
        else:
            state = TurnState(
                thread_id=thread_id,
                run_id=run_id,
                request_id=started.metadata.get("request_id"),
                **recorded_input(started),
            )
            # Read with .get() where it is used: absent is as good as None.
            if (user := started.metadata.get("user")) is not None:
                state["user"] = user
        # Each take-over that generates again is the answer's next attempt.
        self._launch(thread_id, run_id, state, TurnContext(attempt=resumes + 1))
        if (reason := await self.leases.cancel_requested(run_id)) is not None:
            self.request_local_cancel(run_id, reason)

    async def _close_interrupted(self, thread_id: str, run_id: str) -> None:
        logger.error("closing run {} of thread {} as interrupted", run_id, thread_id)
        state: TurnState = {
            "thread_id": thread_id,
            "run_id": run_id,
            "outcome": {
                "status": "failed",
                "content": "",
                "model": "",
                "error": {
                    "code": "interrupted",
                    "message": "the run was interrupted and could not be resumed",
                },
            },
        }
        await append_outcome(self.store, state)
        await self._forget(thread_id, run_id, recorded=True)
