"""Event store costs as a thread grows: append latency and reading the recent history.

    .venv/bin/python bench/event_store.py [--database-url URL] [--smoke]

Default: a fresh SQLite file in a temporary folder, then (if reachable) a fresh
Postgres database on 127.0.0.1 (TEST_POSTGRES_URL; under CI=true it must be
reachable, as for the tests). Each thread is grown to the named version and
then measured: one-message appends, and reading the 20 newest messages the way
prompt building does (the thread's read model for its active leaf, then the path up
from it).

--smoke: small threads and few samples, only to prove the benchmark runs
(tests/e2e/test_bench_smoke.py); its numbers mean nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.support.log import grow, message  # noqa: E402
from main_backend.db import create_database  # noqa: E402
from main_backend.events.store import EventStore  # noqa: E402
from tests.support import databases  # noqa: E402

SIZES = (10, 1_000, 10_000)
SAMPLES = 50
SMOKE_SIZES = (10, 100)
SMOKE_SAMPLES = 3


async def measure(database_url: str, label: str, sizes: tuple[int, ...], samples: int) -> None:
    db = create_database(database_url)
    store = EventStore(db)
    print(f"\n{label}: median of {samples} (ms)")
    print(f"{'version':>8} {'append 1 msg':>13} {'20 newest msgs':>15}")
    try:
        for size in sizes:
            thread_id = f"bench-{size}"
            version = await grow(store, thread_id, size)
            appends, reads = [], []
            for _ in range(samples):
                started = time.perf_counter()
                version = (await store.append(thread_id, [message(version)], version)).version
                appends.append(time.perf_counter() - started)
                started = time.perf_counter()
                newest = []
                thread = await store.get_thread(thread_id)
                assert thread is not None
                async for m in store.iter_path(thread_id, thread.head_id):
                    newest.append(m)
                    if len(newest) == 20:
                        break
                reads.append(time.perf_counter() - started)
            print(
                f"{size:>8} {statistics.median(appends) * 1000:>13.2f} "
                f"{statistics.median(reads) * 1000:>15.2f}"
            )
    finally:
        await db.dispose()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--database-url")
    parser.add_argument("--smoke", action="store_true", help="small and fast: does it run?")
    args = parser.parse_args()
    sizes, samples = (SMOKE_SIZES, SMOKE_SAMPLES) if args.smoke else (SIZES, SAMPLES)
    if args.database_url:
        asyncio.run(measure(args.database_url, args.database_url, sizes, samples))
        return
    for url, label in databases.bench_databases():
        asyncio.run(measure(url, label, sizes, samples))


if __name__ == "__main__":
    main()
