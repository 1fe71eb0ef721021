"""Replay: the admin replay of a long thread, and the projections rebuild, in events/s.

A thread of EVENTS events (`thread.created` and messages of ~270 characters) is
appended straight through `EventStore` (no turn, no LLM), then
`GET /admin/threads/{id}/replay` is timed REPLAYS times as the client sees it (the
whole JSON read), and `POST /admin/projections/rebuild` REBUILDS times: it folds every
event of the database (the other sections' threads too), so its rate is the events it
reports over its wall time.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from bench.suite.common import (
    HTTP_TIMEOUT,
    Engine,
    Section,
    Table,
    admin_headers,
    bar_plot,
    fmt,
    intro,
    median,
    percentile,
    row_line,
)
from bench.support.log import grow
from main_backend.db import create_database
from main_backend.events.store import EventStore

NAME = "replay"
EVENTS = 10_001
SMOKE_EVENTS = 201
REPLAYS = 10
SMOKE_REPLAYS = 2
REBUILDS = 3
SMOKE_REBUILDS = 1


@dataclass
class Replays:
    events: int = 0
    replay_seconds: list[float] = field(default_factory=list)
    replay_bytes: int = 0
    rebuild_events: int = 0
    rebuild_seconds: list[float] = field(default_factory=list)
    rebuild_server_ms: list[float] = field(default_factory=list)


async def build(url: str, thread_id: str, events: int) -> int:
    db = create_database(url)
    try:
        return await grow(EventStore(db), thread_id, events)
    finally:
        await db.dispose()


def measure(engine: Engine) -> Replays:
    smoke = engine.smoke
    thread_id = f"bench-replay-{uuid.uuid4().hex[:8]}"
    result = Replays(
        events=asyncio.run(build(engine.url, thread_id, SMOKE_EVENTS if smoke else EVENTS))
    )
    with httpx.Client(
        base_url=engine.backend.url, timeout=HTTP_TIMEOUT, headers=admin_headers()
    ) as client:
        for _ in range(SMOKE_REPLAYS if smoke else REPLAYS):
            started = time.perf_counter()
            response = client.get(f"/admin/threads/{thread_id}/replay")
            result.replay_seconds.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"replay: {response.status_code} {response.text[:500]}")
            result.replay_bytes = len(response.content)
        for _ in range(SMOKE_REBUILDS if smoke else REBUILDS):
            started = time.perf_counter()
            response = client.post("/admin/projections/rebuild")
            result.rebuild_seconds.append(time.perf_counter() - started)
            if response.status_code != 200:
                raise RuntimeError(f"rebuild: {response.status_code} {response.text[:500]}")
            body = response.json()
            result.rebuild_events = int(body["events"])
            result.rebuild_server_ms.append(float(body["duration_ms"]))
    print(
        row_line(
            result.events,
            median(result.replay_seconds) * 1000,
            result.rebuild_events / median(result.rebuild_seconds),
        )
    )
    return result


def report(results: dict[str, Replays], out: Path) -> Section:
    section = Section(
        NAME,
        "5. Replay and projection rebuild",
        intro(
            __doc__,
            EVENTS=max((r.events for r in results.values()), default="?"),
            REPLAYS=max((len(r.replay_seconds) for r in results.values()), default="?"),
            REBUILDS=max((len(r.rebuild_seconds) for r in results.values()), default="?"),
        ),
    )
    rows = []
    for label, r in results.items():
        rebuild = median(r.rebuild_seconds)
        rows.append(
            [
                f"ours {label}",
                f"{r.events:,}",
                fmt(percentile(r.replay_seconds, 50) * 1000, 1),
                fmt(max(r.replay_seconds) * 1000, 1),
                fmt(r.events / median(r.replay_seconds), 0),
                fmt(r.replay_bytes / 1024, 0),
                f"{r.rebuild_events:,}",
                fmt(rebuild * 1000, 0),
                fmt(r.rebuild_events / rebuild, 0),
                fmt(median(r.rebuild_server_ms), 0),
            ]
        )
    section.tables.append(
        Table(
            "Replay of one thread and rebuild of every read model",
            [
                "backend",
                "thread events",
                "replay p50 (ms)",
                "replay max (ms)",
                "replay events/s",
                "replay response (KiB)",
                "rebuild events",
                "rebuild p50 (ms)",
                "rebuild events/s",
                "rebuild duration_ms (server)",
            ],
            rows,
        )
    )
    bars = {
        f"ours {label}": {
            "replay events/s": r.events / median(r.replay_seconds),
            "rebuild events/s": r.rebuild_events / median(r.rebuild_seconds),
        }
        for label, r in results.items()
    }
    section.plots.append(
        bar_plot(out / "replay_rebuild.png", "Replay and rebuild (events/s)", "events/s", bars)
    )
    return section
