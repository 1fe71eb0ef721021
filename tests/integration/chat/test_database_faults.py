"""A database that stops answering, is refused, is locked, or comes back.

Postgres: the backend reaches the real server through a TCP proxy that can be
switched to forward, blackhole (accept, never answer) or refuse. SQLite: a
real second connection holds the write lock. Elapsed-time bounds are generous
"does not hang" bounds, several times what each step should take.
"""

from __future__ import annotations

import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from typing import Any

import httpx
import pytest
import sqlalchemy as sa
from sqlalchemy.engine import make_url
from sqlalchemy.exc import OperationalError

from main_backend.app import create_app as create_backend
from main_backend.db import create_database, is_database_unavailable
from main_backend.pg_connection import DatabaseTimeouts
from tests.fakes.openai_server import FakeOpenAI
from tests.integration.chat.conftest import ask, backend_settings, wait_idle
from tests.support.databases import query
from tests.support.servers import serve_in_thread
from tests.support.sse import parse_sse
from tests.support.tcp_proxy import TcpProxy, tcp_proxy

POSTGRES_ONLY = pytest.mark.parametrize(
    "engine_name", [pytest.param("postgres", marks=pytest.mark.postgres)]
)
# Small bounds, so a test shows each mechanism within seconds.
FAST_TIMEOUTS = {"database_connect_timeout": 2, "database_statement_timeout": 2}

StartBackend = Callable[..., httpx.Client]


@pytest.fixture
def proxy(database_url: str) -> Iterator[TcpProxy]:
    url = make_url(database_url)
    with tcp_proxy(url.host or "127.0.0.1", url.port or 5432) as running:
        yield running


@pytest.fixture
def start_proxied(database_url: str, agent_url: str, proxy: TcpProxy) -> Iterator[StartBackend]:
    """Backends whose every database connection goes through `proxy`."""
    proxied = make_url(database_url).set(port=proxy.port).render_as_string(hide_password=False)
    with ExitStack() as stack:

        def start(**overrides: Any) -> httpx.Client:
            settings = backend_settings(proxied, agent_url, **{**FAST_TIMEOUTS, **overrides})
            url = stack.enter_context(serve_in_thread(create_backend(settings)))
            return stack.enter_context(httpx.Client(base_url=url, timeout=30))

        try:
            yield start
        finally:
            proxy.set_mode("forward")  # let the apps shut down cleanly


def timed(call: Callable[[], httpx.Response]) -> tuple[httpx.Response, float]:
    started = time.monotonic()
    response = call()
    return response, time.monotonic() - started


def assert_database_unavailable(response: httpx.Response) -> None:
    assert response.status_code == 503, response.text
    assert response.json()["error"]["code"] == "database_unavailable"
    assert int(response.headers["Retry-After"]) > 0


@POSTGRES_ONLY
@pytest.mark.parametrize("outage", ["blackhole", "refuse"])
def test_a_silent_or_refusing_database_is_a_prompt_503_and_health_says_so(
    start_proxied: StartBackend, proxy: TcpProxy, outage: Any
) -> None:
    backend = start_proxied()
    assert backend.post("/threads", json={}).status_code == 201
    proxy.set_mode(outage)

    listing, elapsed = timed(lambda: backend.get("/threads"))
    assert_database_unavailable(listing)
    assert elapsed < 15  # ping (2 s + 1 s margin) then one reconnect (2 s)
    created, elapsed = timed(lambda: backend.post("/threads", json={}))
    assert_database_unavailable(created)
    assert elapsed < 15

    for _ in range(2):  # a second look while the first probe may still be waiting
        health, elapsed = timed(lambda: backend.get("/health"))
        assert elapsed < 8
        assert health.status_code == 503
        body = health.json()
        assert body["status"] == "degraded"
        assert body["checks"]["database"]["status"] == "failing"
        assert body["checks"]["llm_agent"]["status"] == "ok"

    proxy.set_mode("forward")
    deadline = time.monotonic() + 10
    while backend.get("/health").status_code != 200:
        assert time.monotonic() < deadline, "the backend did not recover"
        time.sleep(0.2)
    assert backend.post("/chat/", json=ask("back?")).status_code == 200


@POSTGRES_ONLY
def test_pool_exhaustion_against_a_silent_database_is_503_not_500(
    start_proxied: StartBackend, proxy: TcpProxy
) -> None:
    backend = start_proxied(database_pool_size=1, database_pool_timeout=0.5)
    assert backend.get("/threads").status_code == 200
    proxy.set_mode("blackhole")
    responses: list[httpx.Response] = []

    def ask_threads() -> None:
        responses.append(backend.get("/threads"))

    callers = [threading.Thread(target=ask_threads) for _ in range(6)]
    for caller in callers:
        caller.start()
    for caller in callers:
        caller.join(timeout=30)
    assert len(responses) == 6
    for response in responses:
        assert_database_unavailable(response)


@POSTGRES_ONLY
@pytest.mark.parametrize(
    ("lease_seconds", "outage_seconds"),
    [
        (30, 4),  # shorter than the lease: the failed run must not wait for it to expire
        (3, 7),  # longer than the lease (and than the checkpointer pool's first backoffs)
    ],
)
def test_a_turn_cut_by_an_outage_is_resumed_as_soon_as_the_database_answers(
    start_proxied: StartBackend,
    proxy: TcpProxy,
    upstream: FakeOpenAI,
    database_url: str,
    lease_seconds: float,
    outage_seconds: float,
) -> None:
    backend = start_proxied(run_lease_seconds=lease_seconds, run_poll_seconds=0.2)
    upstream.script({"chunks": ["one ", "two ", "three"], "chunk_delay": 0.5})
    text = ""
    outage_began = time.monotonic()
    with backend.stream("POST", "/chat/stream", json=ask("Count")) as live:
        for line in live.iter_lines():
            text += line + "\n"
            # Mid-answer: the question and the run's checkpoints so far are stored,
            # the answer's checkpoint and the answer will not be.
            if line == "event: delta" and text.count("event: delta") == 1:
                proxy.set_mode("blackhole")
                outage_began = time.monotonic()
    events = parse_sse(text)
    # The stream ends (no hang) with a clear error: the database, retryable.
    assert events[-1].event == "run.failed"
    assert events[-1].data["error"]["code"] == "database_unavailable"
    assert events[-1].data["error"]["retryable"] is True
    assert time.monotonic() - outage_began < 15
    thread_id = events[0].data["thread_id"]

    time.sleep(max(0.0, outage_seconds - (time.monotonic() - outage_began)))
    proxy.set_mode("forward")
    back = time.monotonic()
    while True:
        response = backend.post("/chat/", json=ask("And now?", thread_id=thread_id))
        if response.status_code == 200:
            break
        assert response.json()["error"]["code"] in ("thread_busy", "database_unavailable")
        assert time.monotonic() - back < 10, "turns stayed blocked after the database came back"
        time.sleep(0.2)
    # The interrupted question was answered too, exactly once, before the new turn.
    wait_idle(backend, thread_id)
    rows = query(
        database_url, "SELECT type FROM events WHERE thread_id = :t ORDER BY version", t=thread_id
    )
    types = [row[0] for row in rows]
    assert types.count("run.completed") == 2
    assert "run.failed" not in types


@pytest.mark.parametrize("engine_name", ["sqlite"])
def test_a_locked_sqlite_database_is_a_503_within_the_busy_timeout(
    database_url: str, start_backend: StartBackend
) -> None:
    backend = start_backend(sqlite_busy_timeout_ms=300)
    holder = sqlite3.connect(make_url(database_url).database or "", isolation_level=None)
    try:
        holder.execute("BEGIN EXCLUSIVE")
        created, elapsed = timed(lambda: backend.post("/threads", json={}))
        assert_database_unavailable(created)
        assert elapsed < 8
        chat, _ = timed(lambda: backend.post("/chat/", json=ask("locked?")))
        assert_database_unavailable(chat)
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert backend.post("/threads", json={}).status_code == 201


@POSTGRES_ONLY
async def test_a_slow_statement_on_a_live_server_is_cancelled_there(database_url: str) -> None:
    db = create_database(database_url, timeouts=DatabaseTimeouts(2, 1.5))
    try:
        async with db.engine.connect() as conn:
            assert await conn.scalar(sa.text("SHOW statement_timeout")) == "1500ms"
            started = time.monotonic()
            with pytest.raises(OperationalError) as caught:
                await conn.execute(sa.text("SELECT pg_sleep(10)"))
            assert time.monotonic() - started < 8
            assert "statement timeout" in str(caught.value)
            assert is_database_unavailable(caught.value)
    finally:
        await db.dispose()
