"""The shutdown's signal hook (main_backend/shutdown.py), with real signals: the first
SIGTERM or SIGINT begins the drain and reaches the handler that was there before
(uvicorn's, when served by uvicorn) only once the drain is over; a second one goes
straight on; the hook is removed afterwards. Real processes: tests/e2e/test_shutdown.py."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Iterator
from types import FrameType

import pytest

from main_backend.shutdown import HANDLED_SIGNALS, Shutdown


class Previous:
    """Stands for the server's own handler: records the signals it is given."""

    def __init__(self) -> None:
        self.received: list[int] = []

    def __call__(self, sig: int, frame: FrameType | None) -> None:
        self.received.append(sig)


@pytest.fixture
def previous() -> Iterator[Previous]:
    handler = Previous()
    originals = {sig: signal.signal(sig, handler) for sig in HANDLED_SIGNALS}
    try:
        yield handler
    finally:
        for sig, original in originals.items():
            signal.signal(sig, original)


def test_the_first_signal_drains_before_it_reaches_the_server(previous: Previous) -> None:
    async def scenario() -> None:
        graces: list[float] = []
        release = asyncio.Event()

        async def stop_runs(grace: float) -> None:  # runs in flight, until released
            graces.append(grace)
            await release.wait()

        shutdown = Shutdown(7.0, stop_runs, linger_seconds=0)
        restore = shutdown.hook_signals()
        assert graces == []  # nothing happens before a signal

        signal.raise_signal(signal.SIGTERM)
        for _ in range(100):
            if graces:
                break
            await asyncio.sleep(0.01)
        assert shutdown.draining and graces == [7.0]
        assert previous.received == [] and not shutdown.streams_ended.is_set()

        signal.raise_signal(signal.SIGINT)  # a second signal: straight to the server
        assert previous.received == [signal.SIGINT]

        release.set()  # the runs are done: streams end, then the server gets the SIGTERM
        await shutdown.drain()
        assert shutdown.streams_ended.is_set()
        assert previous.received == [signal.SIGINT, signal.SIGTERM]

        restore()
        assert all(signal.getsignal(sig) is previous for sig in HANDLED_SIGNALS)

    asyncio.run(scenario())


def test_a_drain_that_did_not_end_in_time_still_ends_the_streams(previous: Previous) -> None:
    async def scenario() -> None:
        async def stuck(grace: float) -> None:
            await asyncio.Event().wait()

        shutdown = Shutdown(0, stuck, linger_seconds=0)
        restore = shutdown.hook_signals()
        signal.raise_signal(signal.SIGTERM)
        # Past the grace and the hand-over bound, the streams end and the server is told.
        await asyncio.wait_for(shutdown.streams_ended.wait(), 30)
        await shutdown.drain()
        assert previous.received == [signal.SIGTERM]
        restore()

    asyncio.run(scenario())
