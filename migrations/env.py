"""Alembic environment: async engines from DATABASE_URL, on SQLite and Postgres.

The URL is the app's own (`main_backend.settings.Settings.database_url`)
unless a caller sets `sqlalchemy.url` on the Alembic config (tests do).
"""

from __future__ import annotations

import asyncio
from logging.config import fileConfig
from typing import Any

from alembic import context
from sqlalchemy.engine import Connection

from main_backend.db import create_database, normalize_database_url
from main_backend.schema import metadata
from main_backend.settings import Settings

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

# Tables that other libraries define (LangGraph's checkpoint savers; their DDL
# is frozen in migration 0002) are not ours to compare or drop. The SQLite
# saver names its pending-writes table plain `writes`.
_FOREIGN_TABLE_PREFIXES = ("checkpoint",)
_FOREIGN_TABLES = frozenset({"writes"})


def _include_name(name: str | None, type_: str, parent_names: Any) -> bool:
    if type_ == "table" and name is not None:
        return not (name.startswith(_FOREIGN_TABLE_PREFIXES) or name in _FOREIGN_TABLES)
    return True


def _database_url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings().database_url


def _configure(**kwargs: Any) -> None:
    context.configure(
        target_metadata=metadata,
        compare_type=True,
        include_name=_include_name,
        render_as_batch=True,  # SQLite alters tables by copying them
        **kwargs,
    )


def run_migrations_offline() -> None:
    _configure(url=normalize_database_url(_database_url()), literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def _run_sync(connection: Connection) -> None:
    _configure(connection=connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_migrations_online() -> None:
    database = create_database(_database_url())
    try:
        async with database.writer.connect() as connection:
            await connection.run_sync(_run_sync)
    finally:
        await database.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    asyncio.run(run_migrations_online())
