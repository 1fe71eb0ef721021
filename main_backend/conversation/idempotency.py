"""Idempotency keys: a repeated request returns the first one's outcome.

A key row ties (user, key) to the request's hash and to the run it started.
The outcome itself is not copied here: it is the run's terminal event in the
log, found by its derived id.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from loguru import logger
from sqlalchemy.exc import IntegrityError

from main_backend.conversation.tables import idempotency_keys
from main_backend.db import Database

MAX_KEY_LENGTH = 255


def request_hash(body: dict[str, Any]) -> str:
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class KeyRecord:
    request_hash: str
    thread_id: str
    run_id: str
    created_at: datetime


class IdempotencyKeys:
    def __init__(self, db: Database, ttl_hours: float) -> None:
        self.db = db
        self.ttl = timedelta(hours=ttl_hours)

    async def claim(
        self, owner: str, key: str, digest: str, thread_id: str, run_id: str
    ) -> KeyRecord | None:
        """Record the key for this request; None if it is ours, else the earlier record."""
        now = datetime.now(UTC)
        where = (idempotency_keys.c.owner == owner, idempotency_keys.c.key == key)
        async with self.db.writer.begin() as conn:
            await conn.execute(
                idempotency_keys.delete().where(
                    *where, idempotency_keys.c.created_at < now - self.ttl
                )
            )
            row = (await conn.execute(sa.select(idempotency_keys).where(*where))).first()
            if row is not None:
                return KeyRecord(row.request_hash, row.thread_id, row.run_id, row.created_at)
            try:
                await conn.execute(
                    idempotency_keys.insert().values(
                        owner=owner,
                        key=key,
                        request_hash=digest,
                        thread_id=thread_id,
                        run_id=run_id,
                        created_at=now,
                    )
                )
            except IntegrityError:
                return await self.get(owner, key)
        return None

    async def get(self, owner: str, key: str) -> KeyRecord | None:
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(idempotency_keys).where(
                        idempotency_keys.c.owner == owner, idempotency_keys.c.key == key
                    )
                )
            ).first()
        return (
            None
            if row is None
            else KeyRecord(row.request_hash, row.thread_id, row.run_id, row.created_at)
        )

    async def release(self, owner: str, key: str) -> None:
        """Forget a key whose request was refused, so the client may retry with it."""
        async with self.db.writer.begin() as conn:
            await conn.execute(
                idempotency_keys.delete().where(
                    idempotency_keys.c.owner == owner, idempotency_keys.c.key == key
                )
            )

    async def purge_periodically(self, every_seconds: float = 3600) -> None:
        """Forget expired keys now and then (a repeated key also clears its own)."""
        while True:
            try:
                purged = await self.purge_expired()
                if purged:
                    logger.info("forgot {} expired idempotency key(s)", purged)
            except Exception:
                logger.exception("could not purge expired idempotency keys")
            await asyncio.sleep(every_seconds)

    async def purge_expired(self) -> int:
        cutoff = datetime.now(UTC) - self.ttl
        async with self.db.writer.begin() as conn:
            result = await conn.execute(
                idempotency_keys.delete().where(idempotency_keys.c.created_at < cutoff)
            )
            return result.rowcount
