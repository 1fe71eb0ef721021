"""Joining a run's stream on another replica: the extra writes per turn, and the lag.

    .venv/bin/python bench/stream_join.py [--database-url URL] [--smoke]

Two main-backend replicas on one database, the LLM agent and the fake upstream run
in this process (each app in its own thread). Each turn streams an answer of
`CHUNKS` pieces `CHUNK_DELAY` apart from replica A (`POST /chat/stream`, relayed
from memory) while `listeners` clients join it on replica B
(`GET /threads/{id}/runs/{run_id}/stream`, served from the database). Per row:

- `progress writes`: INSERT/UPDATE statements on `run_progress` per turn (counted on
  the engines), i.e. the writes the joinable stream adds to a turn; they must not
  grow with the listeners;
- `lag p50/p99/max (ms)`: for each delta a joined client got, how long after replica
  A's own stream reached that offset of the answer (the ids name the offset). The
  clients share this process with the servers: with many listeners the lag includes
  their own reading, so it is an upper bound of the servers' part.

Rows: 1, 10 and 50 listeners (`LISTENERS`), each the mean or the percentiles over
`TURNS` turns.

Default: a fresh SQLite file, then (if reachable) a fresh Postgres database
(TEST_POSTGRES_URL; under CI=true it must be reachable). Default settings
(STREAM_POLL_SECONDS, the 100 ms save batching) unless --poll-seconds is given.

--smoke: one short turn per row, SQLite only, only to prove the benchmark runs
(tests/e2e/test_bench_smoke.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import statistics
import sys
import time
from collections.abc import AsyncIterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import event
from sqlalchemy.engine import Engine

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from llm_agent.app import create_app as create_agent  # noqa: E402
from main_backend.app import create_app as create_backend  # noqa: E402
from tests.fakes.openai_server import FakeOpenAI  # noqa: E402
from tests.integration.chat.conftest import backend_settings  # noqa: E402
from tests.integration.llm_agent.conftest import agent_settings  # noqa: E402
from tests.support import databases  # noqa: E402
from tests.support.servers import serve_in_thread  # noqa: E402

LISTENERS = (1, 10, 50)
CHUNKS, CHUNK_DELAY, TURNS = 60, 0.05, 3
SMOKE_LISTENERS = (1, 3)
SMOKE_CHUNKS, SMOKE_CHUNK_DELAY, SMOKE_TURNS = 10, 0.02, 1


class WriteCounter:
    """INSERT/UPDATE statements on run_progress, on every engine of this process."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, conn: Any, cursor: Any, statement: str, *args: Any) -> None:
        head = statement.lstrip()[:30].upper()
        if "RUN_PROGRESS" in head and head.startswith(("INSERT", "UPDATE")):
            self.count += 1


async def note_deltas(lines: AsyncIterator[str], arrivals: dict[int, float]) -> None:
    """Reads a stream to its end; notes when each offset of the answer arrived (a
    delta's id is `<attempt>-<offset>`, and its `id:` line comes before `event:`)."""
    offset: int | None = None
    async for line in lines:
        if line.startswith("id: "):
            offset = int(line.rsplit("-", 1)[1]) if "-" in line else None
        elif line == "event: delta" and offset is not None:
            arrivals[offset] = time.perf_counter()


def percentile(values: list[float], fraction: float) -> float:
    """The nearest-rank percentile (the largest value for a short list)."""
    ordered = sorted(values)
    return ordered[max(0, math.ceil(fraction * len(ordered)) - 1)]


def lags(live: dict[int, float], joined: dict[int, float]) -> list[float]:
    """For each offset a joined client got: its delay after the live stream reached it."""
    reached = sorted(live.items())
    result = []
    for offset, at in joined.items():
        first = next((t for o, t in reached if o >= offset), at)
        result.append(max(0.0, at - first))
    return result


async def turn(
    replica_a: str, replica_b: str, listeners: int, counter: WriteCounter
) -> tuple[int, list[float]]:
    before = counter.count
    live: dict[int, float] = {}
    async with (
        httpx.AsyncClient(base_url=replica_a, timeout=60) as a,
        httpx.AsyncClient(base_url=replica_b, timeout=60) as b,
    ):
        body = {"messages": [{"role": "user", "content": "a long answer, please"}]}
        async with a.stream("POST", "/chat/stream", json=body) as response:
            lines = response.aiter_lines()
            async for line in lines:
                if line.startswith("data: "):
                    started = json.loads(line[6:])
                    break
            path = f"/threads/{started['thread_id']}/runs/{started['run_id']}/stream"
            joined = [dict[int, float]() for _ in range(listeners)]

            async def listen(arrivals: dict[int, float]) -> None:
                async with b.stream("GET", path) as joined_response:
                    assert joined_response.status_code == 200
                    await note_deltas(joined_response.aiter_lines(), arrivals)

            tasks = [asyncio.create_task(listen(arrivals)) for arrivals in joined]
            await note_deltas(lines, live)
            await asyncio.gather(*tasks)
    # The run's last write (trimming its row) follows its terminal event.
    await asyncio.sleep(0.3)
    return counter.count - before, [lag for arrivals in joined for lag in lags(live, arrivals)]


def measure(database_url: str, label: str, smoke: bool, poll_seconds: float | None) -> None:
    listener_counts = SMOKE_LISTENERS if smoke else LISTENERS
    chunks, delay, turns = (
        (SMOKE_CHUNKS, SMOKE_CHUNK_DELAY, SMOKE_TURNS) if smoke else (CHUNKS, CHUNK_DELAY, TURNS)
    )
    counter = WriteCounter()
    event.listen(Engine, "before_cursor_execute", counter)
    overrides: dict[str, Any] = {"max_active_runs_per_user": 1000, "log_level": "WARNING"}
    if poll_seconds is not None:
        overrides["stream_poll_seconds"] = poll_seconds
    try:
        with ExitStack() as stack:
            upstream = stack.enter_context(FakeOpenAI())
            agent = stack.enter_context(
                serve_in_thread(create_agent(agent_settings(upstream.url, allowed_models="*")))
            )
            replica_a, replica_b = (
                stack.enter_context(
                    serve_in_thread(
                        create_backend(backend_settings(database_url, agent, **overrides))
                    )
                )
                for _ in range(2)
            )
            answer_seconds = chunks * delay
            print(f"\n{label}: {turns} turn(s) of {chunks} pieces over {answer_seconds:.1f} s")
            print(
                f"{'listeners':>9} {'progress writes':>16} {'lag p50 (ms)':>13} "
                f"{'p99 (ms)':>9} {'max (ms)':>9}"
            )
            for listeners in listener_counts:
                writes, all_lags = [], []
                for _ in range(turns):
                    upstream.script(
                        {"chunks": [f"w{i} " for i in range(chunks)], "chunk_delay": delay}
                    )
                    count, turn_lags = asyncio.run(turn(replica_a, replica_b, listeners, counter))
                    writes.append(count)
                    all_lags += turn_lags
                print(
                    f"{listeners:>9} {statistics.mean(writes):>16.1f} "
                    f"{statistics.median(all_lags) * 1000:>13.1f} "
                    f"{percentile(all_lags, 0.99) * 1000:>9.1f} {max(all_lags) * 1000:>9.1f}"
                )
    finally:
        event.remove(Engine, "before_cursor_execute", counter)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url")
    parser.add_argument("--poll-seconds", type=float)
    parser.add_argument("--smoke", action="store_true", help="small and fast: does it run?")
    args = parser.parse_args()
    if args.database_url:
        measure(args.database_url, args.database_url, args.smoke, args.poll_seconds)
        return
    # --smoke: SQLite only.
    for url, label in databases.bench_databases(postgres=not args.smoke):
        measure(url, label, args.smoke, args.poll_seconds)


if __name__ == "__main__":
    main()
