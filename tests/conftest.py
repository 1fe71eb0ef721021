"""Shared test set-up.

The process environment must not leak a developer's or CI's settings into the
apps under test, so every setting name is removed before tests run; tests pass
their settings explicitly.

`database_url` gives each test a fresh, migrated database on both engines
(SQLite file, Postgres database), cloned from a template migrated once.
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest

from llm_agent.settings import Settings as AgentSettings
from main_backend.db import Database, create_database
from main_backend.events.store import EventStore
from main_backend.settings import Settings as BackendSettings
from tests.fakes.openai_server import FakeOpenAI
from tests.support import databases

for _name in {*AgentSettings.model_fields, *BackendSettings.model_fields}:
    os.environ.pop(_name.upper(), None)

ENGINES = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="session")
def sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("template") / "template.db"
    databases.migrate(f"sqlite:///{path}")
    return path


@pytest.fixture(scope="session")
def postgres_template() -> Iterator[str]:
    databases.require_postgres()
    name = databases.create_postgres_database()
    databases.migrate(databases.postgres_url(name))
    yield name
    databases.drop_postgres_database(name)


@pytest.fixture
def postgres_admin() -> str:
    return databases.require_postgres()


@pytest.fixture(params=ENGINES)
def engine_name(request: pytest.FixtureRequest) -> str:
    name: str = request.param
    return name


@pytest.fixture
def database_url(engine_name: str, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh database at the migration head."""
    if engine_name == "sqlite":
        target = tmp_path / "stubichat.db"
        databases.copy_sqlite(request.getfixturevalue("sqlite_template"), target)
        yield f"sqlite:///{target}"
        return
    name = databases.create_postgres_database(request.getfixturevalue("postgres_template"))
    yield databases.postgres_url(name)
    databases.drop_postgres_database(name)


@pytest.fixture
def empty_database_url(engine_name: str, tmp_path: Path) -> Iterator[str]:
    """An empty database (no migration run) on each engine."""
    if engine_name == "sqlite":
        yield f"sqlite:///{tmp_path / 'empty.db'}"
        return
    databases.require_postgres()
    name = databases.create_postgres_database()
    yield databases.postgres_url(name)
    databases.drop_postgres_database(name)


@pytest.fixture
def upstream() -> Iterator[FakeOpenAI]:
    """The wire-level fake OpenAI server, in this process."""
    with FakeOpenAI() as fake:
        yield fake


@pytest.fixture
async def db(database_url: str) -> AsyncIterator[Database]:
    database = create_database(database_url)
    yield database
    await database.dispose()


@pytest.fixture
def store(db: Database) -> EventStore:
    return EventStore(db)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if databases.SKIPPED_POSTGRES:
        terminalreporter.write_sep("!", "PostgreSQL tests were SKIPPED", yellow=True, bold=True)
        terminalreporter.write_line(databases.SKIPPED_POSTGRES[0])
