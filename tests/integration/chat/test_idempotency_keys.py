"""Idempotency keys are kept for their time to live, then forgotten."""

from __future__ import annotations

from main_backend.conversation.idempotency import IdempotencyKeys
from main_backend.db import Database
from tests.support.databases import execute


async def test_expired_keys_are_purged_and_live_ones_kept(db: Database, database_url: str) -> None:
    keys = IdempotencyKeys(db, ttl_hours=24)
    assert await keys.claim("alice", "old", "h1", "t1", "r1") is None
    assert await keys.claim("alice", "new", "h2", "t2", "r2") is None
    execute(
        database_url,
        "UPDATE idempotency_keys SET created_at = :when WHERE key = 'old'",
        when="2020-01-01 00:00:00+00:00",
    )
    assert await keys.purge_expired() == 1
    assert await keys.get("alice", "old") is None
    kept = await keys.get("alice", "new")
    assert kept is not None and kept.run_id == "r2"
