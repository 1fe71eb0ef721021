"""The real main backend, counting the SQL statements it runs on SQLite (a bench harness).

`uvicorn bench.support.counted_backend:app` serves `main_backend.main:app` unchanged,
except that every SQLite connection the process opens (SQLAlchemy's pool and the
LangGraph checkpointer's aiosqlite connection alike) gets a trace callback, which sees
every statement SQLite runs, the driver's own BEGIN and COMMIT included.
`GET /_bench/sql` answers `{"statements": {sql: count}}` since the process started;
every other request goes to the backend. PostgreSQL needs none of this
(`pg_stat_statements`). Nothing in the product imports this.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections import Counter
from typing import Any

from starlette.types import Receive, Scope, Send

_lock = threading.Lock()
_statements: Counter[str] = Counter()
_connect = sqlite3.connect


def _note(sql: str) -> None:
    with _lock:
        _statements[" ".join(sql.split())] += 1


def _traced_connect(*args: Any, **kwargs: Any) -> sqlite3.Connection:
    connection = _connect(*args, **kwargs)
    connection.set_trace_callback(_note)
    return connection


# Before the backend is imported: aiosqlite and SQLAlchemy look `sqlite3.connect` up
# when they connect, so every connection of this process is traced.
sqlite3.connect = _traced_connect

from main_backend.main import app as backend_app  # noqa: E402


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http" and scope["path"] == "/_bench/sql":
        with _lock:
            body = json.dumps({"statements": dict(_statements)}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": 200,
                "headers": [(b"content-type", b"application/json")],
            }
        )
        await send({"type": "http.response.body", "body": body})
        return
    await backend_app(scope, receive, send)
