"""Real databases for tests: migrated SQLite files and Postgres databases.

Postgres is mandatory under CI=true: an unreachable server fails the tests
that need it. Elsewhere they skip, and the session ends with a visible notice.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from alembic import command
from alembic.config import Config
from sqlalchemy.engine import make_url

from tests.support.servers import REPO_ROOT

POSTGRES_ADMIN_URL = os.environ.get(
    "TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres"
)
SKIPPED_POSTGRES: list[str] = []


def alembic_config(database_url: str) -> Config:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    config.attributes["configure_logger"] = False
    return config


def migrate(database_url: str, revision: str = "head") -> None:
    command.upgrade(alembic_config(database_url), revision)


def require_postgres() -> str:
    """The admin URL of a reachable Postgres, or fail (CI) / skip (laptop)."""
    try:
        psycopg.connect(POSTGRES_ADMIN_URL, connect_timeout=3).close()
    except psycopg.Error as exc:
        reason = f"PostgreSQL is not reachable at {POSTGRES_ADMIN_URL}: {exc}".strip()
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{reason} (mandatory under CI=true)", pytrace=False)
        SKIPPED_POSTGRES.append(reason)
        pytest.skip(reason + " (set TEST_POSTGRES_URL or start PostgreSQL)")
    return POSTGRES_ADMIN_URL


def postgres_url(database: str) -> str:
    return make_url(POSTGRES_ADMIN_URL).set(database=database).render_as_string(hide_password=False)


def create_postgres_database(template: str | None = None) -> str:
    name = f"stubichat_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        suffix = f' TEMPLATE "{template}"' if template else ""
        conn.execute(f'CREATE DATABASE "{name}"{suffix}')
    return name


def drop_postgres_database(name: str) -> None:
    with psycopg.connect(POSTGRES_ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def copy_sqlite(template: Path, target: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        source = Path(str(template) + suffix)
        if source.exists():
            shutil.copyfile(source, str(target) + suffix)


def _sync_engine(database_url: str) -> sa.Engine:
    url = make_url(database_url)
    return sa.create_engine(
        url.set(drivername="sqlite" if url.get_backend_name() == "sqlite" else "postgresql+psycopg")
    )


def query(database_url: str, sql: str, **params: object) -> list[tuple[object, ...]]:
    """Run one reading SQL statement with a plain synchronous connection (for inspecting)."""
    engine = _sync_engine(database_url)
    try:
        with engine.connect() as conn:
            return [tuple(row) for row in conn.execute(sa.text(sql), params)]
    finally:
        engine.dispose()


def execute(database_url: str, sql: str, **params: object) -> int:
    """Run one writing SQL statement and commit it (tests that tamper with read models)."""
    engine = _sync_engine(database_url)
    try:
        with engine.begin() as conn:
            return conn.execute(sa.text(sql), params).rowcount
    finally:
        engine.dispose()


def count(database_url: str, sql: str, **params: object) -> int:
    """The number a `SELECT count(*) …` statement answers."""
    value = query(database_url, sql, **params)[0][0]
    assert isinstance(value, int), value
    return value


def event_count(database_url: str, thread_id: str | None = None) -> int:
    if thread_id is None:
        return count(database_url, "SELECT count(*) FROM events")
    return count(database_url, "SELECT count(*) FROM events WHERE thread_id = :t", t=thread_id)


WRITE_LOG = "test_write_log"


def log_writes(database_url: str, table: str, key: str) -> None:
    """Note every INSERT and UPDATE of `table`'s rows from now on, by whichever process
    writes them: a trigger adds (the row's `key`, the database clock in seconds) to
    `test_write_log`. A test-only instrument, exact on both engines; read it with
    `logged_writes`."""
    if make_url(database_url).get_backend_name() == "sqlite":
        execute(database_url, f"CREATE TABLE {WRITE_LOG} (key TEXT NOT NULL, at REAL NOT NULL)")
        for operation in ("INSERT", "UPDATE"):
            execute(
                database_url,
                f"CREATE TRIGGER {WRITE_LOG}_{operation.lower()} AFTER {operation} ON {table} "
                f"BEGIN INSERT INTO {WRITE_LOG} "
                f"VALUES (NEW.{key}, (julianday('now') - 2440587.5) * 86400.0); END",
            )
        return
    execute(database_url, f"CREATE TABLE {WRITE_LOG} (key text NOT NULL, at float8 NOT NULL)")
    execute(
        database_url,
        f"CREATE FUNCTION {WRITE_LOG}_note() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
        f"INSERT INTO {WRITE_LOG} VALUES (NEW.{key}, extract(epoch FROM clock_timestamp())); "
        "RETURN NULL; END $$",
    )
    execute(
        database_url,
        f"CREATE TRIGGER {WRITE_LOG} AFTER INSERT OR UPDATE ON {table} "
        f"FOR EACH ROW EXECUTE FUNCTION {WRITE_LOG}_note()",
    )


def logged_writes(database_url: str, key: str) -> list[float]:
    """When each write `log_writes` noted for the row `key` happened, in order."""
    rows = query(database_url, f"SELECT at FROM {WRITE_LOG} WHERE key = :key ORDER BY at", key=key)
    times = []
    for (at,) in rows:
        assert isinstance(at, float), at
        times.append(at)
    return times


def bench_databases(
    postgres: bool = True, sqlite: bool = True, postgres_required: bool = False
) -> Iterator[tuple[str, str]]:
    """(url, label) of a fresh database at the migration head on each engine, for the
    benchmarks: (with `sqlite`) a temporary SQLite file, then (with `postgres`) a
    Postgres database when the server is reachable (under CI=true, or with
    `postgres_required`, it must be: an unreachable server fails)."""
    if sqlite:
        with tempfile.TemporaryDirectory() as folder:
            url = f"sqlite:///{folder}/bench.db"
            migrate(url)
            yield url, "SQLite"
    if not postgres:
        return
    try:
        require_postgres()
    except pytest.skip.Exception as exc:  # unreachable and not under CI=true (there it fails)
        if postgres_required:
            raise RuntimeError(f"PostgreSQL is required here: {exc}") from exc
        print("\nPostgreSQL not reachable: skipped")
        return
    name = create_postgres_database()
    try:
        url = postgres_url(name)
        migrate(url)
        yield url, "PostgreSQL"
    finally:
        drop_postgres_database(name)
