"""DATABASE_URL as operators write it."""

from __future__ import annotations

import pytest

from main_backend.db import normalize_database_url


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("sqlite:///./data/stubichat.db", "sqlite+aiosqlite:///./data/stubichat.db"),
        ("sqlite:////var/lib/stubichat.db", "sqlite+aiosqlite:////var/lib/stubichat.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://app@db:5432/chat", "postgresql+psycopg://app@db:5432/chat"),
        ("postgres://app:pw@db:5432/chat", "postgresql+psycopg://app:pw@db:5432/chat"),
        ("postgresql+psycopg://app@db/chat", "postgresql+psycopg://app@db/chat"),
        ("postgresql+psycopg2://app@db/chat", "postgresql+psycopg://app@db/chat"),
        ("postgresql+asyncpg://app@db/chat", "postgresql+psycopg://app@db/chat"),
        (
            " postgresql://app@db/chat?sslmode=require ",
            "postgresql+psycopg://app@db/chat?sslmode=require",
        ),
    ],
)
def test_operator_forms_become_async_urls(raw: str, expected: str) -> None:
    assert normalize_database_url(raw).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ("mysql://root@db/chat", "not supported"),
        ("not a url", "not a database URL"),
        ("sqlite://", "SQLite file"),
        ("sqlite:///:memory:", "SQLite file"),
        ("postgresql://app@db", "Postgres database"),
    ],
)
def test_bad_urls_are_named(raw: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalize_database_url(raw)
