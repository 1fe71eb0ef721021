"""Growth: turn time and stored bytes per turn against turn number, ours and the peers.

One conversation of TURNS turns (question QUESTION_BYTES, the echo answer the same
plus "You said: "): ours through `POST /chat/` on the engine's backend; each peer in
this process on a fresh database of the same engine. Turn time: every turn, as the
client sees it. Stored bytes per turn: `RowBytes` (the same method for all) read just
before and just after the sampled turns (reading it after every turn would cost more
than the turn as the database grows), outside the timing.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai

from bench.suite import peers
from bench.suite.common import (
    HTTP_TIMEOUT,
    QUESTION_BYTES,
    Engine,
    Section,
    Table,
    fmt,
    intro,
    line_plot,
    median,
    question,
    row_line,
    timed_chat,
)
from bench.support.stack import RowBytes
from tests.support import databases

NAME = "growth"
TURNS = 1000
SMOKE_TURNS = 10
WINDOW = 10  # turns per median shown in the table and plotted


@dataclass
class Curve:
    turn_seconds: list[float] = field(default_factory=list)
    bytes_at: dict[int, int] = field(default_factory=dict)  # sampled turn -> bytes stored
    text_bytes: int = 0  # question + answer of one turn


def sampled(turns: int) -> set[int]:
    early = {1, 2, 3, 5, 10, 20, 50}
    return {t for t in early if t <= turns} | set(range(100, turns + 1, 50)) | {turns}


def measure(engine: Engine) -> dict[str, Curve]:
    turns = engine.growth_turns or (SMOKE_TURNS if engine.smoke else TURNS)
    curves = {f"ours {engine.label}": ours(engine, turns)}
    for variant in peers.variants():
        curves[peers.label(variant, engine.label)] = peer(engine, variant, turns)
    return curves


def ours(engine: Engine, turns: int) -> Curve:
    curve = Curve(text_bytes=2 * len(question(1)) + len("You said: "))
    sizes = RowBytes(engine.url)
    samples = sampled(turns)
    try:
        with httpx.Client(base_url=engine.backend.url, timeout=HTTP_TIMEOUT) as client:
            thread_id: str | None = None
            for n in range(1, turns + 1):
                before = sizes.total() if n in samples else 0
                thread_id, seconds = timed_chat(client, question(n), thread_id)
                curve.turn_seconds.append(seconds)
                if n in samples:
                    curve.bytes_at[n] = sizes.total() - before
                    print(row_line(n, seconds * 1000, curve.bytes_at[n]))
                if n % 100 == 0:
                    engine.upstream.reset()  # it keeps every request it saw
    finally:
        sizes.close()
    return curve


def peer(engine: Engine, variant: peers.Variant, turns: int) -> Curve:
    if engine.key == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            path = f"{folder}/peer.db"
            return asyncio.run(peer_turns(engine, variant, turns, path, f"sqlite:///{path}"))
    name = databases.create_postgres_database()
    try:
        url = databases.postgres_url(name)
        return asyncio.run(peer_turns(engine, variant, turns, url, url))
    finally:
        databases.drop_postgres_database(name)


async def peer_turns(
    engine: Engine, variant: peers.Variant, turns: int, target: str, url: str
) -> Curve:
    curve = Curve(text_bytes=2 * len(question(1)) + len("You said: "))
    client = openai.AsyncOpenAI(api_key="sk-bench", base_url=engine.upstream.url, max_retries=0)
    samples = sampled(turns)
    thread_id = str(uuid.uuid4())
    try:
        async with peers.saver(engine.key, target) as saver:
            graph = peers.build(variant, saver, client)
            sizes = RowBytes(url)  # after setup: the saver's tables exist
            try:
                for n in range(1, turns + 1):
                    before = sizes.total() if n in samples else 0
                    started = time.perf_counter()
                    await peers.turn(graph, thread_id, question(n))
                    curve.turn_seconds.append(time.perf_counter() - started)
                    if n in samples:
                        curve.bytes_at[n] = sizes.total() - before
                    if n % 100 == 0:
                        engine.upstream.reset()
            finally:
                sizes.close()
    finally:
        await client.close()
    return curve


def windows(turns: int) -> list[tuple[int, int]]:
    """(first, last) turns, 1-based inclusive, of the windows shown in the table."""
    ends = [e for e in (WINDOW, 100, 500, 1000) if e <= turns] or [turns]
    if ends[-1] != turns:
        ends.append(turns)
    return [(max(1, e - WINDOW + 1), e) for e in ends]


def report(results: dict[str, dict[str, Curve]], out: Path) -> Section:
    curves = {
        label: curve for per_engine in results.values() for label, curve in per_engine.items()
    }
    turns = max((len(c.turn_seconds) for c in curves.values()), default=0)
    section = Section(
        NAME,
        "1. Growth: turn time and stored bytes per turn against turn number",
        intro(__doc__, TURNS=turns, QUESTION_BYTES=f"{QUESTION_BYTES} B"),
    )
    if not curves:
        return section
    spans = windows(turns)
    headers = ["curve"] + [f"turn ms, median {a}-{b}" for a, b in spans] + ["last/first"]
    time_rows = []
    for label, curve in curves.items():
        medians = [median(curve.turn_seconds[a - 1 : b]) * 1000 for a, b in spans]
        time_rows.append([label, *(fmt(m, 2) for m in medians), fmt(medians[-1] / medians[0], 2)])
    section.tables.append(Table("Turn time (ms)", headers, time_rows))
    shown = sorted({t for t in (1, 10, 100, 500, 1000, turns) if t <= turns})
    byte_rows = []
    for label, curve in curves.items():
        at = [curve.bytes_at.get(t) for t in shown]
        last = curve.bytes_at.get(turns)
        byte_rows.append(
            [
                label,
                *(fmt(v, 0) if v is not None else "n/a" for v in at),
                fmt(last / curve.text_bytes, 1) if last is not None else "n/a",
            ]
        )
    section.tables.append(
        Table(
            f"Stored bytes per turn (text per turn: {next(iter(curves.values())).text_bytes} B)",
            ["curve", *(f"turn {t}" for t in shown), f"turn {turns} / text"],
            byte_rows,
        )
    )
    time_series: dict[str, tuple[list[float], list[float]]] = {}
    for label, curve in curves.items():
        xs, ys = [], []
        for end in range(WINDOW, len(curve.turn_seconds) + 1, max(1, WINDOW // 2)):
            xs.append(float(end))
            ys.append(median(curve.turn_seconds[end - WINDOW : end]) * 1000)
        if not xs:  # fewer turns than a window
            xs = [float(i + 1) for i in range(len(curve.turn_seconds))]
            ys = [s * 1000 for s in curve.turn_seconds]
        time_series[label] = (xs, ys)
    section.plots.append(
        line_plot(
            out / "growth_turn_time.png",
            f"Turn time (median of {WINDOW} turns)",
            "turn number",
            "ms",
            time_series,
            logy=True,
        )
    )
    byte_series = {
        label: (
            [float(t) for t in sorted(c.bytes_at)],
            [float(c.bytes_at[t]) for t in sorted(c.bytes_at)],
        )
        for label, c in curves.items()
    }
    section.plots.append(
        line_plot(
            out / "growth_bytes_per_turn.png",
            "Stored bytes per turn",
            "turn number",
            "bytes",
            byte_series,
            logy=True,
            marker="o",
        )
    )
    return section
