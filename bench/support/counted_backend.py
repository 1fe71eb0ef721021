"""The real main backend, counting the SQL statements it runs on SQLite (a bench harness).

`uvicorn bench.support.counted_backend:app` serves `main_backend.main:app` unchanged,
except that every SQLite connection the process opens (SQLAlchemy's pool and the
LangGraph checkpointer's aiosqlite connection alike) is traced (`sqlite_trace`).
`GET /_bench/sql` answers `{"statements": {sql: count}}` since the process started;
every other request goes to the backend. PostgreSQL needs none of this
(`pg_stat_statements`). Nothing in the product imports this.
"""

from __future__ import annotations

import json

from starlette.types import Receive, Scope, Send

from bench.support import sqlite_trace

sqlite_trace.install()  # before the backend connects anywhere

from main_backend.main import app as backend_app  # noqa: E402


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "http" and scope["path"] == "/_bench/sql":
        body = json.dumps({"statements": sqlite_trace.counts()}).encode()
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
