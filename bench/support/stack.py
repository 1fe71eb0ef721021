"""The processes a benchmark runs against, as deployed, and what it reads off them.

- `upstream_and_agent`: the wire-level fake OpenAI server (`tests/fakes/openai_server.py`)
  and `uvicorn llm_agent.main:app` (openai provider) in front of it;
- `backend`: `uvicorn main_backend.main:app` (or a wrapper app) on a database at the
  migration head, healthy;
- `RowBytes`: the bytes of the live rows of every table (both engines);
- `cpu_seconds`, `rss_bytes`: a process's CPU time and resident memory (Linux, /proc).
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import sqlalchemy as sa
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from tests.e2e.conftest import FakeUpstream, agent_env, wait_healthy  # noqa: E402
from tests.support.servers import ServiceProcess  # noqa: E402

__all__ = [
    "FakeUpstream",
    "RowBytes",
    "ServiceProcess",
    "answered",
    "backend",
    "cpu_seconds",
    "rss_bytes",
    "upstream_and_agent",
]


class RowBytes:
    """The bytes of the live rows of every table of the database, per table.

    SQLite: the payload bytes of the tables' b-trees (`dbstat`); PostgreSQL:
    `sum(pg_column_size(row))` over each table, row headers included. Indexes, dead
    tuples and free pages are left out. The tables are listed once, at construction."""

    def __init__(self, database_url: str) -> None:
        url = make_url(database_url)
        self.sqlite = url.get_backend_name() == "sqlite"
        driver = "sqlite" if self.sqlite else "postgresql+psycopg"
        self.engine = sa.create_engine(url.set(drivername=driver))
        with self.engine.connect() as conn:
            if self.sqlite:
                names = conn.execute(
                    sa.text("SELECT name FROM sqlite_schema WHERE type = 'table'")
                ).scalars()
            else:
                names = conn.execute(
                    sa.text(
                        "SELECT table_name FROM information_schema.tables "
                        "WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'"
                    )
                ).scalars()
            self.tables = sorted(str(name) for name in names)
        if self.sqlite:
            listed = ", ".join(f"'{name}'" for name in self.tables)
            self.sql = sa.text(
                f"SELECT name, sum(payload) FROM dbstat WHERE name IN ({listed}) GROUP BY name"
            )
        else:
            self.sql = sa.text(
                " UNION ALL ".join(
                    f"SELECT '{name}', coalesce(sum(pg_column_size(t.*)), 0) FROM \"{name}\" t"
                    for name in self.tables
                )
            )

    def read(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            found = {str(name): int(size or 0) for name, size in conn.execute(self.sql)}
        return {name: found.get(name, 0) for name in self.tables}

    def total(self) -> int:
        return sum(self.read().values())

    def close(self) -> None:
        self.engine.dispose()


@contextmanager
def upstream_and_agent(log_dir: Path, **env: str) -> Iterator[tuple[FakeUpstream, ServiceProcess]]:
    """The fake OpenAI process and an llm_agent process in front of it (started, not
    awaited: a backend's health check waits for it). `env`: more agent settings."""
    upstream = FakeUpstream()
    try:
        agent = ServiceProcess(
            "llm_agent.main:app", {**agent_env(upstream), **env}, log_dir / "agent.log"
        )
        try:
            yield upstream, agent
        except BaseException:
            print(f"----- llm_agent log\n{agent.output()[-4000:]}", file=sys.stderr)
            raise
        finally:
            agent.stop()
    finally:
        upstream.close()


@contextmanager
def backend(
    database_url: str,
    agent: ServiceProcess,
    log_dir: Path,
    app: str = "main_backend.main:app",
    name: str = "backend",
    **env: str,
) -> Iterator[ServiceProcess]:
    """A main backend process (`app`) on the database, healthy (so the agent is up too).
    `env`: more settings over the defaults."""
    settings = {
        "DATABASE_URL": database_url,
        "LLM_AGENT_URL": agent.url,
        "LOG_LEVEL": "WARNING",
        **env,
    }
    service = ServiceProcess(app, settings, log_dir / f"{name}.log")
    try:
        wait_healthy(service, timeout=60)
        agent.wait_ready("/health")
        yield service
    except BaseException:
        print(f"----- {name} log\n{service.output()[-4000:]}", file=sys.stderr)
        raise
    finally:
        service.stop()


def answered(response: httpx.Response) -> dict[str, Any]:
    if response.status_code != 200:
        raise RuntimeError(f"{response.request.url}: {response.status_code} {response.text}")
    body: dict[str, Any] = response.json()
    return body


def cpu_seconds(pid: int) -> float:
    """The CPU time (user + system) process `pid` has used so far (Linux: /proc)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return math.nan
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    """Process `pid`'s resident set size (VmRSS in /proc/<pid>/status), 0 if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0
