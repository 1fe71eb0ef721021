"""Counting the SQL statements SQLite runs in this process, without touching the code
that runs them: every connection opened after `install()` gets a trace callback, which
sees every statement (the driver's own BEGIN and COMMIT included). aiosqlite and
SQLAlchemy look `sqlite3.connect` up when they connect, so install before they do."""

from __future__ import annotations

import sqlite3
import threading
from collections import Counter
from typing import Any

_lock = threading.Lock()
_statements: Counter[str] = Counter()
_connect = sqlite3.connect


def _note(sql: str) -> None:
    with _lock:
        _statements[" ".join(sql.split())] += 1


def _traced_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    connection: sqlite3.Connection = _connect(*args, **kwargs)
    connection.set_trace_callback(_note)
    return connection


def install() -> None:
    sqlite3.connect = _traced_connect  # type: ignore[assignment]


def uninstall() -> None:
    sqlite3.connect = _connect


def counts() -> dict[str, int]:
    """Every statement seen so far (whitespace collapsed) and how many times."""
    with _lock:
        return dict(_statements)
