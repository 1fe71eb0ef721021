"""Streams: open `/chat/stream` requests against the backend's resident memory.

For each size N: the fake upstream is scripted to answer N streams slowly (pieces
at most MAX_GAP apart, so that every stream is held open while the rest open), then N
concurrent `POST /chat/stream` requests are sent from this process (each a new thread).
A sampler reads the backend's VmRSS (/proc/<pid>/status) every SAMPLE_SECONDS with the
number of streams open at that moment (a first `delta` received, the terminal event
not yet). RSS growth per open stream = (VmRSS at the sample with the most streams open
- VmRSS before the first request) / that number. Completed = streams whose terminal
event was `run.completed`. The gap between pieces is sized from the previous size's
opening rate so that all N are open at once.
"""

from __future__ import annotations

import asyncio
import json
import math
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.suite.common import (
    Engine,
    Section,
    Table,
    fmt,
    intro,
    line_plot,
    question,
    row_line,
)
from bench.support.stack import rss_bytes

NAME = "streams"
SIZES = (250, 500, 1000, 2000)
SMOKE_SIZES = (5, 10)
MIN_PIECES = 4
# Under the agent's OPENAI_READ_TIMEOUT (60 s), which a longer silence of the upstream
# would trip: a stream is held longer with more pieces, not longer gaps.
MAX_GAP = 30.0
SAMPLE_SECONDS = 0.2
FIRST_OPEN_SECONDS = 0.08  # a guess of the seconds per stream opened, before any is measured


@dataclass
class Hold:
    streams: int
    peak_open: int = 0
    rss_before: int = 0
    rss_at_peak: int = 0
    rss_max: int = 0
    completed: int = 0
    failed: int = 0
    seconds_to_open: float = 0.0
    samples: list[tuple[float, int, int]] = field(default_factory=list)  # (t, open, rss)
    errors: Counter[str] = field(default_factory=Counter)  # why streams failed

    @property
    def per_stream(self) -> float:
        return (self.rss_at_peak - self.rss_before) / self.peak_open if self.peak_open else 0.0


def pieces(count: int) -> list[str]:
    return [f"slow piece {i} of a held stream. " for i in range(count)]


async def hold(engine: Engine, n: int, held: float) -> Hold:
    """N streams, each held about `held` seconds after its first piece."""
    count = max(MIN_PIECES, math.ceil(held / MAX_GAP) + 1)
    chunk_delay = held / (count - 1)
    pid = engine.backend.process.pid
    result = Hold(n, rss_before=rss_bytes(pid))
    engine.upstream.reset()
    engine.upstream.script(
        *({"chunks": pieces(count), "chunk_delay": chunk_delay} for _ in range(n))
    )
    state = {"open": 0, "done": 0}
    started = time.monotonic()

    async def one(client: httpx.AsyncClient, i: int) -> None:
        body: dict[str, Any] = {"messages": [{"role": "user", "content": question(i)}]}
        counted = False
        name = ""
        try:
            async with client.stream("POST", "/chat/stream", json=body) as response:
                if response.status_code != 200:
                    result.failed += 1
                    result.errors[f"HTTP {response.status_code}"] += 1
                    return
                async for line in response.aiter_lines():
                    if line.startswith("event:"):
                        name = line.partition(":")[2].strip()
                        if name == "delta" and not counted:
                            counted = True
                            state["open"] += 1
                        elif name == "run.completed":
                            result.completed += 1
                        elif name in ("run.failed", "run.cancelled"):
                            result.failed += 1
                    elif line.startswith("data:") and name == "run.failed":
                        error = json.loads(line.partition(":")[2]).get("error") or {}
                        result.errors[str(error.get("code", "run.failed"))] += 1
        except httpx.HTTPError as exc:
            result.failed += 1
            result.errors[type(exc).__name__] += 1
        finally:
            if counted:
                state["open"] -= 1
            state["done"] += 1

    async def sample() -> None:
        while state["done"] < n:
            rss = rss_bytes(pid)
            now = time.monotonic() - started
            result.samples.append((now, state["open"], rss))
            result.rss_max = max(result.rss_max, rss)
            if state["open"] >= result.peak_open and state["open"] > 0:
                if state["open"] > result.peak_open:
                    result.seconds_to_open = now
                result.peak_open, result.rss_at_peak = state["open"], rss
            await asyncio.sleep(SAMPLE_SECONDS)

    limits = httpx.Limits(max_connections=n + 10, max_keepalive_connections=n + 10)
    timeout = httpx.Timeout(600.0, connect=60.0)
    async with httpx.AsyncClient(
        base_url=engine.backend.url, limits=limits, timeout=timeout
    ) as client:
        sampler = asyncio.create_task(sample())
        await asyncio.gather(*(one(client, i) for i in range(n)))
        await sampler
    engine.upstream.reset()
    return result


def measure(engine: Engine) -> list[Hold]:
    per_stream_open = FIRST_OPEN_SECONDS
    results = []
    for n in engine.stream_sizes or (SMOKE_SIZES if engine.smoke else SIZES):
        # Long enough gaps for the last stream to open before the first one ends.
        slack = 1.5 if engine.smoke else 6.0
        held = max(slack, n * per_stream_open * 1.5 + slack)
        if engine.smoke:  # a few streams: whether they all overlap matters little here
            held = min(held, 3.0)
        result = asyncio.run(hold(engine, n, held))
        results.append(result)
        if result.peak_open:
            per_stream_open = max(per_stream_open, result.seconds_to_open / result.peak_open)
        print(row_line(n, result.per_stream / 1024, result.peak_open, result.completed))
    return results


def report(results: dict[str, list[Hold]], out: Path) -> Section:
    section = Section(
        NAME,
        "4. Streams: open streams against the backend's RSS",
        intro(__doc__, MAX_GAP=f"{MAX_GAP:g} s", SAMPLE_SECONDS=f"{SAMPLE_SECONDS} s"),
    )
    rows = []
    for label, holds in results.items():
        for h in holds:
            rows.append(
                [
                    f"ours {label}",
                    str(h.streams),
                    str(h.peak_open),
                    fmt(h.rss_before / 2**20, 1),
                    fmt(h.rss_at_peak / 2**20, 1),
                    fmt(h.per_stream / 1024, 1),
                    f"{h.completed}/{h.streams}",
                    "yes" if h.completed == h.streams else "no",
                    ", ".join(f"{k} {v}" for k, v in getattr(h, "errors", Counter()).items())
                    or "-",
                ]
            )
    section.tables.append(
        Table(
            "Open streams and RSS",
            [
                "backend",
                "streams",
                "most open at once",
                "RSS before (MiB)",
                "RSS then (MiB)",
                "RSS growth per open stream (KiB)",
                "completed",
                "all completed",
                "failures",
            ],
            rows,
        )
    )
    series = {
        f"ours {label}": (
            [float(h.peak_open) for h in holds],
            [h.per_stream / 1024 for h in holds],
        )
        for label, holds in results.items()
    }
    section.plots.append(
        line_plot(
            out / "streams_rss_per_stream.png",
            "Backend RSS growth per open stream",
            "streams open at once",
            "KiB per stream",
            series,
            marker="o",
        )
    )
    return section
