"""A separate writer process for the multi-process tests:

    python -m tests.integration.events.append_worker DATABASE_URL THREAD_ID COUNT

Appends COUNT messages to THREAD_ID, one append at a time, re-reading the
version after each conflict; prints "conflicts=N" at the end.
"""

from __future__ import annotations

import asyncio
import sys

from main_backend.db import create_database
from main_backend.errors import VersionConflict
from main_backend.events.store import EventStore
from tests.support.events import message_added


async def append_with_retries(store: EventStore, thread_id: str, count: int, tag: str) -> int:
    """Append `count` messages one by one, re-reading the version after each conflict."""
    conflicts = 0
    for i in range(count):
        while True:
            version = await store.current_version(thread_id)
            try:
                await store.append(thread_id, [message_added(f"{tag}-{i}")], version)
                break
            except VersionConflict:
                conflicts += 1
    return conflicts


async def main(database_url: str, thread_id: str, count: int) -> None:
    db = create_database(database_url)
    try:
        conflicts = await append_with_retries(EventStore(db), thread_id, count, "p")
    finally:
        await db.dispose()
    print(f"conflicts={conflicts}", flush=True)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], int(sys.argv[3])))
