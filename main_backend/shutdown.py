"""Shutdown hands streams over: what this replica does between SIGTERM and its exit.

On the first SIGTERM (or SIGINT) it drains:

1. it takes no new run: `POST /chat/` and `/chat/stream` answer `503 shutting_down`
   (with Retry-After) and `/health` answers 503 `"status": "draining"`, so that load
   balancers stop routing here; everything else is still served (reads, clients
   joining or resuming a run's stream) and no run of another replica is taken over;
2. the runs it drives get `SHUTDOWN_GRACE_SECONDS` to finish; those that do end
   normally, their streams with their terminal event;
3. at the deadline it stops driving the rest and expires their leases (another
   replica resumes them at its next sweep), then ends every open SSE stream with no
   terminal event (`streams_ended`): clients resume on another replica with
   `Last-Event-ID`. A `POST /chat/` still waiting for its answer gets
   `503 shutting_down` naming its thread and run;
4. only then does it pass the signal on to the server (uvicorn), which closes its
   listener, finds no stream left to wait for, runs the lifespan shutdown and exits:
   within the grace period plus a few seconds, whoever is still connected.

Why a signal hook inside the app rather than an entry point of our own: on SIGTERM,
uvicorn first waits for every open connection (for ever, unless
`--timeout-graceful-shutdown` cuts them) and only then runs the lifespan shutdown, so
an app learns that it is stopping only once every stream has ended. uvicorn installs
its handlers with `signal.signal` before the lifespan starts and puts the previous
ones back after it ends; the lifespan installs this hook over them, keeps uvicorn's
handler, and calls it when the drain is over. So the drain works however uvicorn is
started (the Dockerfile's CMD, `scripts/start`, the tests, by hand) with all its
options, and there is no second command line to keep in step with uvicorn's. A second
signal during the drain goes straight to uvicorn (which then stops accepting and
waits for the connections; a further Ctrl-C forces it to quit, as usual).

Signals can only be hooked from the main thread: an app served from another thread
(in-process tests) drains when `request()` is called, or from its lifespan shutdown,
which uvicorn runs after the connections closed.

Telling a stream ended by this shutdown from a client that went away: while
`draining` is true, any end of a stream that is not its terminal event is this
replica's doing (the hand-over), never the client's.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import threading
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from functools import partial
from types import FrameType
from typing import Any, TypeVar

from loguru import logger

from main_backend.errors import ShuttingDown

T = TypeVar("T")

HANDLED_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Most seconds the hand-over itself (cancelling the runs left, expiring their leases)
# may take after the grace period; past it the streams are ended anyway, and the
# leases expire by themselves after RUN_LEASE_SECONDS.
HAND_OVER_SECONDS = 5.0
# Retry-After of 503 shutting_down: another replica can take the request at once.
RETRY_AFTER_SECONDS = 1

StopRuns = Callable[[float], Awaitable[None]]
SignalHandler = Callable[[int, FrameType | None], Any] | int | None


class Shutdown:
    """The drain of one app; created in its lifespan (on the server's event loop)."""

    def __init__(self, grace_seconds: float, stop_runs: StopRuns, linger_seconds: float) -> None:
        """`stop_runs(grace)` lets runs finish for up to `grace` seconds, then hands
        the rest over (`TurnRunner.stop`). When the runs all finished in time, the open
        streams get up to `linger_seconds` more (within the grace) to send their end:
        a stream joined from the log sees it at its next read."""
        self.grace_seconds = grace_seconds
        self.linger_seconds = linger_seconds
        self._stop_runs = stop_runs
        self._open_streams = 0
        self._no_open_stream = asyncio.Event()
        self._no_open_stream.set()
        # Set at the deadline: every open SSE stream ends now, without terminal event.
        self.streams_ended = asyncio.Event()
        self._loop = asyncio.get_running_loop()
        self._task: asyncio.Task[None] | None = None
        self._then: list[Callable[[], object]] = []
        self._signalled = False

    @property
    def draining(self) -> bool:
        """True from the moment the shutdown began: new runs are refused."""
        return self._task is not None

    def refuse_new_runs(self) -> None:
        """Raise `ShuttingDown` (503 shutting_down) once draining."""
        if self.draining:
            raise ShuttingDown(RETRY_AFTER_SECONDS)

    def handed_over(self, thread_id: str, run_id: str) -> ShuttingDown:
        """The error of a request that waited for a run this replica handed over."""
        return ShuttingDown(RETRY_AFTER_SECONDS, thread_id, run_id)

    def request(self, then: Callable[[], object] | None = None) -> None:
        """Begin draining (if not begun yet); callable from any thread and from a signal
        handler. `then` is called on the event loop once the drain is over."""
        self._loop.call_soon_threadsafe(self._begin, then)

    async def drain(self) -> None:
        """Begin draining if not begun yet, and wait until the drain is over."""
        await self._begin()

    def _begin(self, then: Callable[[], object] | None = None) -> asyncio.Task[None]:
        if self._task is None:
            self._task = self._loop.create_task(self._drain(), name="shutdown drain")
        if then is not None:
            if self._task.done():
                _call(then)
            else:
                self._then.append(then)
        return self._task

    async def _drain(self) -> None:
        logger.warning(
            "shutting down: new runs are refused; runs in flight get up to {}s to finish",
            self.grace_seconds,
        )
        deadline = self._loop.time() + self.grace_seconds
        try:
            try:
                async with asyncio.timeout(self.grace_seconds + HAND_OVER_SECONDS):
                    await self._stop_runs(self.grace_seconds)
            except TimeoutError:
                logger.error(
                    "the runs left were not handed over within {}s; their leases expire "
                    "by themselves",
                    HAND_OVER_SECONDS,
                )
            except Exception:
                logger.exception(
                    "could not hand the runs left over; their leases expire by themselves"
                )
            else:
                linger = min(deadline - self._loop.time(), self.linger_seconds)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._no_open_stream.wait(), max(0.0, linger))
        finally:
            if self._open_streams:
                logger.info(
                    "ending {} open stream(s); their clients resume on another replica",
                    self._open_streams,
                )
            self.streams_ended.set()
            then, self._then = self._then, []
            for callback in then:
                _call(callback)

    @contextmanager
    def stream(self) -> Iterator[None]:
        """Counts an SSE stream as open while in it."""
        self._open_streams += 1
        self._no_open_stream.clear()
        try:
            yield
        finally:
            self._open_streams -= 1
            if not self._open_streams:
                self._no_open_stream.set()

    async def unless_streams_end(self, waiting: Awaitable[T]) -> T | None:
        """What `waiting` gives, or None if the streams are ended first."""
        task = asyncio.ensure_future(waiting)
        ended = asyncio.ensure_future(self.streams_ended.wait())
        try:
            await asyncio.wait({task, ended}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            ended.cancel()
            if not task.done():
                task.cancel()
        return None if task.cancelled() else task.result()

    def hook_signals(self) -> Callable[[], None]:
        """Drain on the first SIGTERM or SIGINT, then pass it on to the handler that was
        there before (uvicorn's). Returns what puts that handler back."""
        if threading.current_thread() is not threading.main_thread():
            logger.info("not on the main thread: shutdown signals are left to the server")
            return lambda: None
        previous: dict[int, SignalHandler] = {sig: signal.getsignal(sig) for sig in HANDLED_SIGNALS}

        def on_signal(sig: int, frame: FrameType | None) -> None:
            if self._signalled:  # a second signal: the server's own handling, at once
                pass_on(previous[sig], sig, frame)
                return
            self._signalled = True
            self.request(then=partial(pass_on, previous[sig], sig, None))

        for sig in HANDLED_SIGNALS:
            signal.signal(sig, on_signal)

        def restore() -> None:
            for sig, handler in previous.items():
                if signal.getsignal(sig) is on_signal and handler is not None:
                    signal.signal(sig, handler)

        return restore


def pass_on(handler: SignalHandler, sig: int, frame: FrameType | None) -> None:
    """Do with `sig` what `handler`, its disposition before the hook, does."""
    if callable(handler):
        handler(sig, frame)
    elif handler == signal.SIG_DFL:
        signal.signal(sig, signal.SIG_DFL)
        signal.raise_signal(sig)
    # SIG_IGN, or a handler not installed from Python (None): nothing to do.


def _call(callback: Callable[[], object]) -> None:
    try:
        callback()
    except Exception:
        logger.exception("a shutdown callback failed")
