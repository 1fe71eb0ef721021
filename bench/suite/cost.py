"""Cost: SQL statements and transactions per turn, and CPU per turn.

TURNS sequential `POST /chat/` turns (a new thread every THREAD_TURNS), counted
around them; what the backend does when idle (its pollers) is measured over
IDLE_SECONDS first and subtracted at that rate.

- PostgreSQL: statements from `pg_stat_statements` (calls per normalised query, over the
  bench database only: `dbid`; "n/a" when the view is missing), sorted by kind;
  transactions from `pg_stat_database` (xact_commit + xact_rollback), read once the
  backend's sessions flushed their counters (they do within ~10 s of going idle),
  less this script's own.
- SQLite: a second backend process on the same database, `bench.support.counted_backend`
  (the real app, every SQLite connection traced: every statement SQLite runs, BEGIN and
  COMMIT included); transactions = BEGINs (a statement outside one is its own).
- CPU: the backend process's utime + stime (/proc/<pid>/stat, 10 ms ticks) over the
  turns, per turn; the agent's likewise.
- Peers: the same turns through LangGraph's chatbot pattern on a fresh database
  (statements traced the same way; CPU: this process's, which holds the graph and the
  openai client).
"""

from __future__ import annotations

import asyncio
import re
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import openai
import psycopg

from bench.suite import peers
from bench.suite.common import (
    HTTP_TIMEOUT,
    Engine,
    Section,
    Table,
    bar_plot,
    fmt,
    intro,
    question,
    row_line,
    timed_chat,
)
from bench.support import sqlite_trace
from bench.support.stack import cpu_seconds
from tests.support import databases

NAME = "cost"
TURNS = 40
SMOKE_TURNS = 3
THREAD_TURNS = 10
IDLE_SECONDS = 5.0
SMOKE_IDLE_SECONDS = 1.0
FLUSH_SECONDS = 11.0  # PostgreSQL flushes an idle session's counters within 10 s
KINDS = (
    "BEGIN/COMMIT/ROLLBACK",
    "pre-ping SELECT 1",
    "checkpoints",
    "events",
    "read models",
    "other",
)


@dataclass
class Cost:
    turns: int
    statements: dict[str, float] | None = None  # kind -> per turn; None: n/a
    transactions: float | None = None  # per turn
    cpu_ms: float | None = None  # per turn, the backend (peers: this process)
    agent_cpu_ms: float | None = None
    top: list[tuple[str, float]] = field(default_factory=list)  # statement -> per turn


def normalised(sql: str) -> str:
    """A statement with its literals as `?`: SQLite's trace shows them inlined."""
    sql = re.sub(r"'(?:[^']|'')*'", "?", sql)
    return re.sub(r"\b\d+(?:\.\d+)?\b", "?", sql)


def kind(sql: str) -> str:
    text = sql.strip().lower()
    first = text.split(None, 1)[0] if text else ""
    if first in ("begin", "commit", "rollback", "savepoint", "release", "start", "end"):
        return KINDS[0]
    if re.fullmatch(r"select (1|\$1|\?)", text):
        return KINDS[1]
    if "checkpoint" in text:
        return KINDS[2]
    if re.search(r"\bevents\b", text):
        return KINDS[3]
    if re.search(r"\b(threads|messages|runs)\b", text):
        return KINDS[4]
    return KINDS[5]


def per_turn(
    before: dict[str, int],
    after: dict[str, int],
    turns: int,
    idle: dict[str, float] | None = None,
    seconds: float = 0.0,
) -> tuple[dict[str, float], list[tuple[str, float]]]:
    """Statements per turn by kind (less the idle rate over `seconds`), and the most
    frequent statements."""
    diff: dict[str, float] = {}
    for sql, calls in after.items():
        if "pg_stat" in sql:  # this script's own reads
            continue
        more = calls - before.get(sql, 0) - (idle or {}).get(sql, 0.0) * seconds
        if more > 0:
            diff[sql] = more
    by_kind = dict.fromkeys(KINDS, 0.0)
    for sql, extra in diff.items():
        by_kind[kind(sql)] += extra / turns
    top = sorted(((sql, extra / turns) for sql, extra in diff.items()), key=lambda t: -t[1])
    return by_kind, top


def idle_rate(read: Callable[[], dict[str, int]], seconds: float) -> dict[str, float]:
    before = read()
    time.sleep(seconds)
    after = read()
    return {sql: (calls - before.get(sql, 0)) / seconds for sql, calls in after.items()}


def pg_statements(url: str) -> dict[str, int]:
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT query, calls FROM pg_stat_statements WHERE dbid = "
            "(SELECT oid FROM pg_database WHERE datname = current_database())"
        ).fetchall()
    found: Counter[str] = Counter()
    for query, calls in rows:  # one query may be listed once per user and top-level flag
        found[" ".join(str(query).split())] += int(calls)
    return dict(found)


def pg_transactions(database: str) -> int:
    """The database's transactions so far, read from another database (so not adding
    to them)."""
    with psycopg.connect(databases.POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute("SELECT pg_stat_clear_snapshot()")
        row = conn.execute(
            "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = %s",
            (database,),
        ).fetchone()
    return int(row[0]) if row else 0


def turns_on(url: str, turns: int) -> float:
    """TURNS sequential turns on the backend at `url`; their wall time."""
    started = time.monotonic()
    with httpx.Client(base_url=url, timeout=HTTP_TIMEOUT) as client:
        thread_id: str | None = None
        for n in range(turns):
            if n % THREAD_TURNS == 0:
                thread_id = None
            thread_id, _ = timed_chat(client, question(n), thread_id)
    return time.monotonic() - started


def ours_postgres(engine: Engine, turns: int, idle_seconds: float) -> Cost:
    database = engine.url.rsplit("/", 1)[1].split("?")[0]
    result = Cost(turns)
    pid, agent_pid = engine.backend.process.pid, engine.agent.process.pid
    try:
        idle = idle_rate(lambda: pg_statements(engine.url), idle_seconds)
        statements_before = pg_statements(engine.url)
    except psycopg.Error:
        idle, statements_before = {}, None
    xacts_before, xacts_at = pg_transactions(database), time.monotonic()
    cpu, agent_cpu = cpu_seconds(pid), cpu_seconds(agent_pid)
    seconds = turns_on(engine.backend.url, turns)
    result.cpu_ms = (cpu_seconds(pid) - cpu) * 1000 / turns
    result.agent_cpu_ms = (cpu_seconds(agent_pid) - agent_cpu) * 1000 / turns
    if statements_before is not None:
        result.statements, result.top = per_turn(
            statements_before, pg_statements(engine.url), turns, idle, seconds
        )
    # The counters of idle sessions reach pg_stat_database within 10 s; the rate of the
    # backend's own idle transactions is read over the next window and subtracted.
    time.sleep(FLUSH_SECONDS)
    xacts_after, after_at = pg_transactions(database), time.monotonic()
    time.sleep(FLUSH_SECONDS)
    idle_xacts = (pg_transactions(database) - xacts_after) / (time.monotonic() - after_at)
    own = 3 if statements_before is not None else 0  # this script's sessions in the database
    result.transactions = (
        xacts_after - xacts_before - idle_xacts * (after_at - xacts_at) - own
    ) / turns
    return result


def ours_sqlite(engine: Engine, turns: int, idle_seconds: float) -> Cost:
    result = Cost(turns)
    with (
        engine.start_backend(
            app="bench.support.counted_backend:app", name="backend-counted"
        ) as counted,
        httpx.Client(base_url=counted.url, timeout=HTTP_TIMEOUT) as client,
    ):

        def read() -> dict[str, int]:
            found: dict[str, int] = client.get("/_bench/sql").json()["statements"]
            return found

        idle = idle_rate(read, idle_seconds)
        before = read()
        pid, agent_pid = counted.process.pid, engine.agent.process.pid
        cpu, agent_cpu = cpu_seconds(pid), cpu_seconds(agent_pid)
        seconds = turns_on(counted.url, turns)
        result.cpu_ms = (cpu_seconds(pid) - cpu) * 1000 / turns
        result.agent_cpu_ms = (cpu_seconds(agent_pid) - agent_cpu) * 1000 / turns
        result.statements, result.top = per_turn(before, read(), turns, idle, seconds)
    begins = sum(calls for sql, calls in result.top if sql.lower().startswith("begin"))
    result.transactions = begins
    return result


async def peer_turns(engine: Engine, variant: peers.Variant, turns: int, target: str) -> float:
    client = openai.AsyncOpenAI(api_key="sk-bench", base_url=engine.upstream.url, max_retries=0)
    try:
        async with peers.saver(engine.key, target) as saver:
            graph = peers.build(variant, saver, client)
            started = time.process_time()
            thread_id = ""
            for n in range(turns):
                if n % THREAD_TURNS == 0:
                    thread_id = str(uuid.uuid4())
                await peers.turn(graph, thread_id, question(n))
            return time.process_time() - started
    finally:
        await client.close()


def peer(engine: Engine, variant: peers.Variant, turns: int) -> Cost:
    result = Cost(turns)
    if engine.key == "sqlite":
        with tempfile.TemporaryDirectory() as folder:
            sqlite_trace.install()
            try:
                before = sqlite_trace.counts()
                cpu = asyncio.run(peer_turns(engine, variant, turns, f"{folder}/peer.db"))
                after = sqlite_trace.counts()
            finally:
                sqlite_trace.uninstall()
        result.statements, result.top = per_turn(before, after, turns)
        result.transactions = sum(c for s, c in result.top if s.lower().startswith("begin"))
        result.cpu_ms = cpu * 1000 / turns
        return result
    name = databases.create_postgres_database()
    try:
        url = databases.postgres_url(name)
        statements_before: dict[str, int] | None = None
        with suppress(psycopg.Error):
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("CREATE EXTENSION IF NOT EXISTS pg_stat_statements")
            statements_before = pg_statements(url)
        xacts_before = pg_transactions(name)
        cpu = asyncio.run(peer_turns(engine, variant, turns, url))
        if statements_before is not None:
            result.statements, result.top = per_turn(statements_before, pg_statements(url), turns)
        time.sleep(1.5)  # the saver's sessions ended: their counters are flushed
        own = 3 if statements_before is not None else 0
        result.transactions = (pg_transactions(name) - xacts_before - own) / turns
        result.cpu_ms = cpu * 1000 / turns
    finally:
        databases.drop_postgres_database(name)
    return result


def measure(engine: Engine) -> dict[str, Cost]:
    turns = SMOKE_TURNS if engine.smoke else TURNS
    idle_seconds = SMOKE_IDLE_SECONDS if engine.smoke else IDLE_SECONDS
    engine.upstream.reset()
    if engine.key == "postgres":
        ours = ours_postgres(engine, turns, idle_seconds)
    else:
        ours = ours_sqlite(engine, turns, idle_seconds)
    engine.upstream.reset()
    costs = {f"ours {engine.label}": ours}
    for variant in peers.variants():
        costs[peers.label(variant, engine.label)] = peer(engine, variant, turns)
        engine.upstream.reset()
    for label, cost in costs.items():
        total = sum(cost.statements.values()) if cost.statements else float("nan")
        print(f"  {label}:")
        print(row_line(turns, total, cost.transactions or 0.0, cost.cpu_ms or 0.0))
    return costs


def report(results: dict[str, dict[str, Cost]], out: Path) -> Section:
    section = Section(
        NAME,
        "6. Cost: SQL statements, transactions and CPU per turn",
        intro(
            __doc__,
            TURNS=max((c.turns for r in results.values() for c in r.values()), default="?"),
            THREAD_TURNS=THREAD_TURNS,
            IDLE_SECONDS="a few seconds",
        ),
    )
    costs = {label: c for per_engine in results.values() for label, c in per_engine.items()}
    rows = []
    for label, c in costs.items():
        statements = c.statements
        rows.append(
            [
                label,
                str(c.turns),
                fmt(sum(statements.values()), 1) if statements else "n/a",
                *((fmt(statements[k], 1) if statements else "n/a") for k in KINDS),
                fmt(c.transactions, 1),
                fmt(c.cpu_ms, 1),
                fmt(c.agent_cpu_ms, 1),
            ]
        )
    section.tables.append(
        Table(
            "Per turn",
            [
                "curve",
                "turns",
                "statements",
                *KINDS,
                "transactions",
                "CPU ms (backend; peers: in-process)",
                "agent CPU ms",
            ],
            rows,
        )
    )
    for label, c in costs.items():
        merged: dict[str, float] = {}
        for sql, calls in c.top:
            merged[normalised(sql)] = merged.get(normalised(sql), 0.0) + calls
        top = sorted(merged.items(), key=lambda item: -item[1])
        if label.startswith("ours") and top:
            section.tables.append(
                Table(
                    f"{label}: the most frequent statements (per turn)",
                    ["statement", "per turn"],
                    [
                        [f"`{sql[:110].replace('|', '/')}`", fmt(calls, 2)]
                        for sql, calls in top[:15]
                    ],
                )
            )
    bars = {label: dict(c.statements) for label, c in costs.items() if c.statements is not None}
    section.plots.append(
        bar_plot(out / "cost_statements.png", "SQL statements per turn, by kind", "per turn", bars)
    )
    return section
