"""Throughput: sustained turns/s against concurrent clients, and against backend
processes over one Postgres database.

Each client is an asyncio task looping `POST /chat/` (a new thread every THREAD_TURNS
turns), all in this process; turns/s = the turns completed within SECONDS (after a
warm-up turn per client) over SECONDS. Backend, agent, fake upstream, database and
clients share the machine's cores. Processes: CLIENTS_FOR_PROCESSES clients spread in
turn over 1 then 2 backend processes on the same database (Postgres only).
"""

from __future__ import annotations

import asyncio
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.suite.common import (
    HTTP_TIMEOUT,
    Engine,
    Section,
    Table,
    fmt,
    intro,
    line_plot,
    question,
    row_line,
)

NAME = "throughput"
CLIENTS = (1, 4, 16)
SMOKE_CLIENTS = (1, 2)
SECONDS = 15.0
SMOKE_SECONDS = 2.0
PROCESSES = (1, 2)
CLIENTS_FOR_PROCESSES = 16
SMOKE_CLIENTS_FOR_PROCESSES = 2
THREAD_TURNS = 20


@dataclass
class Throughput:
    by_clients: dict[int, float] = field(default_factory=dict)  # clients -> turns/s
    by_processes: dict[int, float] = field(default_factory=dict)  # processes -> turns/s
    failures: int = 0
    seconds: float = 0.0
    clients_for_processes: int = 0


async def client_loop(
    client: httpx.AsyncClient, number: int, deadline: float, counts: list[int]
) -> None:
    thread_id: str | None = None
    turn = 0
    while True:
        body: dict[str, Any] = {"messages": [{"role": "user", "content": question(turn)}]}
        if thread_id is not None:
            body["thread_id"] = thread_id
        response = await client.post("/chat/", json=body)
        if time.monotonic() > deadline:
            return
        if response.status_code != 200:
            counts[1] += 1
            continue
        counts[0] += 1
        turn += 1
        thread_id = None if turn % THREAD_TURNS == 0 else response.json()["thread_id"]
        if number < 0:  # the warm-up: one turn
            return


async def sustained(urls: list[str], clients: int, seconds: float) -> tuple[float, int]:
    """(turns/s over `seconds`, failed turns) of `clients` clients spread over `urls`."""
    limits = httpx.Limits(max_connections=clients + 4, max_keepalive_connections=clients + 4)
    sessions = [
        httpx.AsyncClient(base_url=url, timeout=HTTP_TIMEOUT, limits=limits) for url in urls
    ]
    try:
        warm = [0, 0]
        await asyncio.gather(
            *(client_loop(sessions[i % len(urls)], -1, float("inf"), warm) for i in range(clients))
        )
        counts = [0, 0]
        deadline = time.monotonic() + seconds
        await asyncio.gather(
            *(client_loop(sessions[i % len(urls)], i, deadline, counts) for i in range(clients))
        )
        return counts[0] / seconds, counts[1]
    finally:
        for session in sessions:
            await session.aclose()


def measure(engine: Engine) -> Throughput:
    smoke = engine.smoke
    seconds = SMOKE_SECONDS if smoke else SECONDS
    result = Throughput(seconds=seconds)
    for clients in SMOKE_CLIENTS if smoke else CLIENTS:
        rate, failed = asyncio.run(sustained([engine.backend.url], clients, seconds))
        engine.upstream.reset()
        result.by_clients[clients] = rate
        result.failures += failed
        print(row_line(clients, rate))
    if engine.key != "postgres":
        return result
    clients = SMOKE_CLIENTS_FOR_PROCESSES if smoke else CLIENTS_FOR_PROCESSES
    result.clients_for_processes = clients
    with ExitStack() as stack:
        urls = [engine.backend.url]
        for processes in PROCESSES:
            while len(urls) < processes:
                extra = stack.enter_context(engine.start_backend(name=f"backend-{len(urls) + 1}"))
                urls.append(extra.url)
            rate, failed = asyncio.run(sustained(urls, clients, seconds))
            engine.upstream.reset()
            result.by_processes[processes] = rate
            result.failures += failed
            print(row_line(processes, rate))
    return result


def report(results: dict[str, Throughput], out: Path) -> Section:
    section = Section(
        NAME,
        "3. Throughput: sustained turns/s",
        intro(
            __doc__,
            THREAD_TURNS=THREAD_TURNS,
            SECONDS=f"{next(iter(results.values())).seconds:g} s" if results else "?",
            CLIENTS_FOR_PROCESSES=max(
                (r.clients_for_processes for r in results.values()), default="?"
            ),
        ),
    )
    clients = sorted({c for r in results.values() for c in r.by_clients})
    section.tables.append(
        Table(
            "Turns/s against concurrent clients (one backend process)",
            ["backend", *(f"{c} clients" for c in clients), f"{clients[-1]}/{clients[0]}"]
            if clients
            else ["backend"],
            [
                [
                    f"ours {label}",
                    *(fmt(r.by_clients.get(c), 1) for c in clients),
                    fmt(r.by_clients[clients[-1]] / r.by_clients[clients[0]], 2)
                    if clients and r.by_clients.get(clients[0])
                    else "n/a",
                ]
                for label, r in results.items()
            ],
        )
    )
    processes = sorted({p for r in results.values() for p in r.by_processes})
    if processes:
        section.tables.append(
            Table(
                "Turns/s against backend processes over one database",
                ["backend", *(f"{p} processes" for p in processes), "2/1"],
                [
                    [
                        f"ours {label}",
                        *(fmt(r.by_processes.get(p), 1) for p in processes),
                        fmt(r.by_processes[processes[-1]] / r.by_processes[processes[0]], 2)
                        if r.by_processes.get(processes[0])
                        else "n/a",
                    ]
                    for label, r in results.items()
                    if r.by_processes
                ],
            )
        )
    section.notes.append(
        "failed turns (non-200): "
        + ", ".join(f"{label} {r.failures}" for label, r in results.items())
    )
    series: dict[str, tuple[list[float], list[float]]] = {
        f"ours {label}": (
            [float(c) for c in sorted(r.by_clients)],
            [r.by_clients[c] for c in sorted(r.by_clients)],
        )
        for label, r in results.items()
    }
    for label, r in results.items():
        if r.by_processes:
            series[f"ours {label}, {r.clients_for_processes} clients, by processes"] = (
                [float(p) for p in sorted(r.by_processes)],
                [r.by_processes[p] for p in sorted(r.by_processes)],
            )
    section.plots.append(
        line_plot(
            out / "throughput.png",
            "Sustained turns/s against concurrent clients (and backend processes)",
            "clients (or processes)",
            "turns/s",
            series,
            marker="o",
        )
    )
    return section
