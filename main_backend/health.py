"""The health checks (database, migrations, LLM agent), answered within a bound.

Each check is a probe task that runs to its own end (the database's connection
timeouts, the agent client's timeout bound it); `/health` waits for it at most
`deadline` seconds and reports a check still running as failing. A probe that
outlives the deadline is not cancelled (cancelling a psycopg statement on a
silent server sends a cancel request and waits again) but shared: the next
`/health` waits for the same probe, so a health checker polling a hung
database never piles up probes holding pooled connections.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Any

from main_backend.db import Database
from main_backend.llm_client import LLMAgentClient

# /health answers within this, plus a little.
HEALTH_DEADLINE_SECONDS = 2.5

Checks = dict[str, dict[str, Any]]


class HealthChecks:
    def __init__(
        self,
        db: Database,
        llm: LLMAgentClient,
        migration_head: str | None,
        deadline: float = HEALTH_DEADLINE_SECONDS,
    ) -> None:
        self.db = db
        self.llm = llm
        self.migration_head = migration_head
        self.deadline = deadline
        self._probes: dict[str, asyncio.Task[Checks]] = {}

    async def run(self) -> Checks:
        probes = {
            "database": self._probe("database", self._database),
            "llm_agent": self._probe("llm_agent", self._llm_agent),
        }
        await asyncio.wait(probes.values(), timeout=self.deadline)
        checks: Checks = {}
        for name, probe in probes.items():
            if probe.done():
                checks.update(probe.result())
                continue
            checks[name] = {
                "status": "failing",
                "error": "timeout",
                "message": f"no answer within {self.deadline:g} s",
            }
            if name == "database":
                checks["migrations"] = {"status": "unknown"}
        return checks

    async def close(self) -> None:
        for probe in self._probes.values():
            probe.cancel()
            with contextlib.suppress(BaseException):
                await probe

    def _probe(self, name: str, check: Callable[[], Awaitable[Checks]]) -> asyncio.Task[Checks]:
        probe = self._probes.get(name)
        if probe is None or probe.done():
            probe = self._probes[name] = asyncio.create_task(
                _never_raises(name, check), name=f"health {name}"
            )
        return probe

    async def _database(self) -> Checks:
        current = await self.db.migration_version()
        migrations: dict[str, Any] = {"status": "ok"}
        if current != self.migration_head:
            migrations = {
                "status": "failing",
                "current": current,
                "head": self.migration_head,
                "fix": "run `alembic upgrade head`",
            }
        return {"database": {"status": "ok"}, "migrations": migrations}

    async def _llm_agent(self) -> Checks:
        return {"llm_agent": await self.llm.health()}


async def _never_raises(name: str, check: Callable[[], Awaitable[Checks]]) -> Checks:
    try:
        return await check()
    except Exception as exc:
        checks: Checks = {name: {"status": "failing", "error": type(exc).__name__}}
        if name == "database":
            checks["migrations"] = {"status": "unknown"}
        return checks
