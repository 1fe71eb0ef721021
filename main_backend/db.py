"""Database engines from DATABASE_URL: SQLite (embedded default) or Postgres.

One `Database` holds a read engine and a write engine over one pool. On SQLite
the write engine opens every transaction with `BEGIN IMMEDIATE`, so a writer
takes the write lock up front and waits (busy_timeout) instead of failing with
"database is locked" halfway through; reads use plain `BEGIN` and, in WAL mode,
never block or wait for writers. On Postgres both are the same pooled engine
over connections that never wait forever for the server (`pg_connection`). The
pool survives a server restart without pinging the server at every checkout (a
round trip per read): a checkout first looks whether the server has closed the
connection's socket (`_dead_on_checkout`), and a connection found dead is
replaced before it is used.

Every SQLite connection (the engines' and the checkpointer's) is a
`SQLiteConnection`, which rolls back before it closes: see there why.

`DATABASE_UNAVAILABLE` names every error that means "the database cannot be
used right now" (unreachable, silent, locked, or no connection to be had in
time), whichever layer raised it: SQLAlchemy, or the checkpointer's psycopg
pool and aiosqlite connection, which SQLAlchemy does not wrap.
"""

from __future__ import annotations

import contextlib
import sqlite3
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import sqlalchemy as sa
from loguru import logger
from sqlalchemy import event
from sqlalchemy.engine import URL, Connection, make_url
from sqlalchemy.exc import ArgumentError, DisconnectionError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine
from sqlalchemy.util import await_

from main_backend.pg_connection import DatabaseTimeouts, bounded_connection_class, server_closed

# psycopg.OperationalError covers psycopg_pool.PoolTimeout and DatabaseUnresponsive;
# sqlite3.OperationalError is "database is locked" past the busy timeout.
DATABASE_UNAVAILABLE: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    PoolTimeout,
    psycopg.OperationalError,
    sqlite3.OperationalError,
)


class SQLiteConnection(sqlite3.Connection):
    """A SQLite connection that ends its transaction when it is closed.

    `sqlite3.Connection.close()` on a connection whose statement is still alive in a
    cursor (an `executemany`'s, or a SELECT's with rows left) leaves it open as a
    "zombie" that keeps its transaction, and SQLite's write lock, until that cursor is
    garbage-collected. A replica stopping with a run in flight gets there: SQLAlchemy
    closes a connection whose task was cancelled mid-statement without a rollback (the
    traceback still holding the cursor), and the checkpointer may close while a
    checkpoint write waits for its commit. Every other replica then finds the database
    locked. Rolling back first releases the lock whatever cursors survive.
    """

    def close(self) -> None:
        with contextlib.suppress(sqlite3.Error):  # closed already, or the rollback failed
            if self.in_transaction:
                self.rollback()
        super().close()


def is_database_unavailable(exc: BaseException | None) -> bool:
    return isinstance(exc, DATABASE_UNAVAILABLE)


_ASYNC_DRIVERS = {
    "sqlite": "sqlite+aiosqlite",
    "sqlite+aiosqlite": "sqlite+aiosqlite",
    "postgres": "postgresql+psycopg",
    "postgresql": "postgresql+psycopg",
    "postgresql+psycopg": "postgresql+psycopg",
    "postgresql+psycopg_async": "postgresql+psycopg",
    "postgresql+psycopg2": "postgresql+psycopg",
    # Kept working for existing deployments, on psycopg like the rest: pg_connection's
    # bounded connections and the checkpointer are psycopg's, so asyncpg is not installed.
    "postgresql+asyncpg": "postgresql+psycopg",
}


def normalize_database_url(raw: str) -> URL:
    """The async SQLAlchemy URL for an operator-written DATABASE_URL."""
    text = raw.strip()
    # SQLAlchemy does not know the "postgres" scheme that Heroku-style URLs use.
    if text.startswith("postgres://"):
        text = "postgresql://" + text.removeprefix("postgres://")
    try:
        url = make_url(text)
    except ArgumentError as exc:
        raise ValueError(f"DATABASE_URL is not a database URL: {raw!r}") from exc
    driver = _ASYNC_DRIVERS.get(url.drivername)
    if driver is None:
        raise ValueError(
            f"DATABASE_URL scheme {url.drivername!r} is not supported; use sqlite:///path "
            "or postgresql://user@host:5432/db"
        )
    url = url.set(drivername=driver)
    if url.get_backend_name() == "sqlite" and url.database in (None, "", ":memory:"):
        raise ValueError("DATABASE_URL must name an SQLite file (sqlite:///path/to/file.db)")
    if url.get_backend_name() == "postgresql" and not url.database:
        raise ValueError("DATABASE_URL must name a Postgres database (…:5432/dbname)")
    return url


@dataclass(frozen=True)
class Database:
    engine: AsyncEngine
    writer: AsyncEngine
    # For reads of one statement: on Postgres in autocommit, so a read is that one
    # statement (no BEGIN, no ROLLBACK); the same engine as `engine` on SQLite. Not for
    # server-side cursors (`stream`), which need a transaction.
    reader: AsyncEngine

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    @property
    def lone_writer(self) -> AsyncEngine:
        """For a write of one statement: on Postgres the autocommit `reader` (the
        statement is its own transaction, no BEGIN and COMMIT around it); on SQLite the
        `writer`, whose BEGIN IMMEDIATE takes the write lock up front."""
        return self.writer if self.dialect == "sqlite" else self.reader

    async def dispose(self) -> None:
        await self.engine.dispose()

    async def migration_version(self) -> str | None:
        """The Alembic revision the database is at (None: its version table is empty)."""
        async with self.engine.connect() as conn:
            version = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
        return None if version is None else str(version)


def create_database(
    database_url: str,
    *,
    pool_size: int = 10,
    pool_timeout: float = 30.0,
    sqlite_busy_timeout_ms: int = 30_000,
    timeouts: DatabaseTimeouts | None = None,
    echo: bool = False,
) -> Database:
    """`timeouts` bound every Postgres connection (None: unbounded, for migrations)."""
    url = normalize_database_url(database_url)
    if url.get_backend_name() == "sqlite":
        return _sqlite(url, sqlite_busy_timeout_ms, echo)
    connect_args: dict[str, Any] = {}
    if timeouts is not None:
        connect_args["async_creator_fn"] = bounded_connection_class(timeouts).connect
    engine = create_async_engine(
        url,
        pool_size=pool_size,
        max_overflow=pool_size,
        pool_timeout=pool_timeout,
        echo=echo,
        connect_args=connect_args,
    )
    event.listen(engine.sync_engine, "checkout", _dead_on_checkout)
    _retry_first_statement(engine, connect_args)
    return Database(
        engine=engine, writer=engine, reader=engine.execution_options(isolation_level="AUTOCOMMIT")
    )


def _dead_on_checkout(dbapi_connection: Any, _record: Any, _proxy: Any) -> None:
    """Refuse a pooled connection whose server has gone (SQLAlchemy replaces it):
    `pg_connection.server_closed`, no round trip. One the server drops after this look,
    or without a word, is caught at its first statement (`_retry_first_statement`)."""
    if server_closed(dbapi_connection.driver_connection):
        raise DisconnectionError("the server closed the connection")


# The key, in a pooled connection's `info`, of "checked out and not used yet".
_UNUSED = "stubichat_unused"


def _retry_first_statement(engine: AsyncEngine, connect_args: dict[str, Any]) -> None:
    """Run again, once, on a new connection, the first statement of a checkout that
    finds the server gone (the server closed the connection after `_dead_on_checkout`
    looked, or without a word).

    Safe because nothing else ran on the connection: psycopg opens the transaction
    with that statement, so there is no work to lose. SQLAlchemy never sees the
    failure: the adapter's psycopg connection is replaced under it. Any later
    statement's disconnect fails as before (SQLAlchemy then invalidates the pool).
    """
    dialect = engine.dialect
    cargs, cparams = dialect.create_connect_args(engine.url)
    cparams.update(connect_args)  # as the pool connects

    @event.listens_for(engine.sync_engine, "checkout")
    def _mark_unused(_dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        record.info[_UNUSED] = True

    @event.listens_for(engine.sync_engine, "do_execute")
    def _execute(cursor: Any, statement: str, parameters: Any, context: Any) -> bool | None:
        pooled = context.root_connection.connection
        if not _take_unused(pooled):
            return None  # SQLAlchemy executes it
        try:
            cursor.execute(statement, parameters)
            return True
        except psycopg.Error as exc:
            adapter = pooled.dbapi_connection
            if not dialect.is_disconnect(exc, adapter, cursor):  # type: ignore[arg-type]
                raise
            logger.warning("a pooled connection was dead ({}); retrying on a new one", exc)
        fresh = dialect.connect(*cargs, **cparams)
        dead = adapter._connection
        # As the checkout set it (the reader's autocommit).
        await_(fresh._connection.set_autocommit(dead.autocommit))
        with contextlib.suppress(psycopg.Error):
            await_(dead.close())
        adapter._connection = fresh._connection
        context.cursor = retry = adapter.cursor()
        retry.execute(statement, parameters)
        return True

    # Other statements only count as the connection's use (run as SQLAlchemy runs them).
    @event.listens_for(engine.sync_engine, "do_executemany")
    def _executemany(_cursor: Any, _statement: str, _parameters: Any, context: Any) -> None:
        _take_unused(context.root_connection.connection)

    @event.listens_for(engine.sync_engine, "do_execute_no_params")
    def _execute_no_params(_cursor: Any, _statement: str, context: Any) -> None:
        _take_unused(context.root_connection.connection)


def _take_unused(pooled: Any) -> bool:
    """Whether the connection had not been used since its checkout (now it has)."""
    try:
        return bool(pooled.info.pop(_UNUSED, False))
    except NotImplementedError:  # the engine's first connection, for the dialect's checks
        return False


def _sqlite(url: URL, busy_timeout_ms: int, echo: bool) -> Database:
    assert url.database is not None
    Path(url.database).expanduser().parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(
        url,
        echo=echo,
        connect_args={"timeout": busy_timeout_ms / 1000, "factory": SQLiteConnection},
        pool_size=5,
        max_overflow=10,
    )

    @event.listens_for(engine.sync_engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not the sqlite3 module, decide where transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine.sync_engine, "begin")
    def _on_begin(connection: Connection) -> None:
        immediate = connection.get_execution_options().get("sqlite_immediate", False)
        connection.exec_driver_sql("BEGIN IMMEDIATE" if immediate else "BEGIN")

    return Database(
        engine=engine, writer=engine.execution_options(sqlite_immediate=True), reader=engine
    )
