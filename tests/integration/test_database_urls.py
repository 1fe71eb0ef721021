"""Every Postgres form of DATABASE_URL reaches the database on the app's bounded connections."""

from __future__ import annotations

import pytest
import sqlalchemy as sa

from main_backend.db import create_database
from main_backend.pg_connection import DatabaseTimeouts

POSTGRES = pytest.param("postgres", marks=pytest.mark.postgres)
SCHEMES = [
    "postgres",
    "postgresql",
    "postgresql+psycopg",
    "postgresql+psycopg2",
    "postgresql+asyncpg",
]


@pytest.mark.parametrize("engine_name", [POSTGRES])
@pytest.mark.parametrize("scheme", SCHEMES)
async def test_each_postgres_scheme_connects_through_psycopg_with_the_timeouts(
    database_url: str, scheme: str
) -> None:
    url = scheme + database_url.removeprefix("postgresql")
    db = create_database(url, timeouts=DatabaseTimeouts(connect_seconds=3, statement_seconds=7))
    try:
        async with db.engine.connect() as conn:
            assert (await conn.execute(sa.text("SHOW statement_timeout"))).scalar_one() == "7s"
            events = (await conn.execute(sa.text("SELECT count(*) FROM events"))).scalar_one()
        assert (db.engine.dialect.driver, events) == ("psycopg", 0)
    finally:
        await db.dispose()
