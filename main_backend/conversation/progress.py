"""A running run's answer so far, in the database, so every replica can serve its stream.

The replica driving a run saves the whole partial answer into the run's one
`run_progress` row, at most every `SAVE_SECONDS` while the answer comes (the
complete answer goes to the log with the run's end): the writes per run depend on
how long it generates, never on how many clients listen. Other replicas read the
row (streams.py) and send what lies past the offset a client has seen. Once the
run's end is in the log the text is emptied: the log holds the answer then, and the
row keeps only the attempt that wrote it.

No row reads as the first attempt with nothing generated yet, so a first attempt
writes nothing before `SAVE_SECONDS` have passed: an answer that comes whole sooner
costs no progress write at all (its listeners elsewhere read it from the log, as
they would have `SAVE_SECONDS` later anyway). A later attempt writes its row at
once, so listeners of an earlier one learn the answer starts again.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
from dataclasses import dataclass
from datetime import UTC, datetime

import sqlalchemy as sa
from loguru import logger
from sqlalchemy.dialects import postgresql, sqlite

from main_backend.conversation.tables import run_progress
from main_backend.db import Database

# Batching of the partial answer's saves: a joined client on another replica is
# behind the driving one by at most this plus its poll period.
SAVE_SECONDS = 0.1
# How long a run's end waits for a progress save in flight.
STOP_WAIT_SECONDS = 1.0


# Deltas a `TextBuffer` keeps apart before it joins them into one block.
BLOCK_PIECES = 64


class TextBuffer:
    """An answer that grows a delta at a time, kept in few objects.

    A model streams an answer in pieces of a few characters, and an object per piece
    (a string, a list slot, an event) costs several times the text it holds, for as
    long as the answer goes on. Pieces are joined into blocks of `BLOCK_PIECES`, and
    `since(offset)` reads what lies past an offset without joining the whole text.
    """

    __slots__ = ("_ends", "_loose", "_parts", "length")

    def __init__(self) -> None:
        self._parts: list[str] = []
        self._ends: list[int] = []  # where each part ends in the text
        self._loose = 0  # pieces at the end not yet joined into a block
        self.length = 0

    def add(self, text: str) -> None:
        if not text:
            return
        self.length += len(text)
        self._parts.append(text)
        self._ends.append(self.length)
        self._loose += 1
        if self._loose >= BLOCK_PIECES:
            block = "".join(self._parts[-self._loose :])
            del self._parts[-self._loose :], self._ends[-self._loose :]
            self._parts.append(block)
            self._ends.append(self.length)
            self._loose = 0

    def since(self, offset: int) -> str:
        """The text past its first `offset` characters."""
        if offset >= self.length:
            return ""
        index = bisect.bisect_right(self._ends, offset)
        start = self._ends[index - 1] if index else 0
        return self._parts[index][offset - start :] + "".join(self._parts[index + 1 :])

    def text(self) -> str:
        return self.since(0)


@dataclass(frozen=True, slots=True)
class Progress:
    attempt: int
    text: str


class RunProgress:
    """The `run_progress` rows."""

    def __init__(self, db: Database) -> None:
        self.db = db

    async def save(self, run_id: str, thread_id: str, attempt: int, text: str) -> None:
        values = {"attempt": attempt, "text": text, "updated_at": datetime.now(UTC)}
        insert = (postgresql.insert if self.db.dialect == "postgresql" else sqlite.insert)(
            run_progress
        )
        # One statement, whether the row is there yet or not.
        upsert = insert.values(run_id=run_id, thread_id=thread_id, **values).on_conflict_do_update(
            index_elements=[run_progress.c.run_id], set_=values
        )
        async with self.db.writer.begin() as conn:
            await conn.execute(upsert)

    async def get(self, run_id: str) -> Progress | None:
        async with self.db.engine.connect() as conn:
            row = (
                await conn.execute(
                    sa.select(run_progress.c.attempt, run_progress.c.text).where(
                        run_progress.c.run_id == run_id
                    )
                )
            ).first()
        return None if row is None else Progress(row.attempt, row.text)

    async def attempt(self, run_id: str) -> int:
        """The attempt that generated the run's answer (1 if none was saved)."""
        progress = await self.get(run_id)
        return 1 if progress is None else progress.attempt

    async def ended(self, run_id: str) -> None:
        """The run's end is in the log: keep the row small."""
        async with self.db.writer.begin() as conn:
            await conn.execute(
                run_progress.update()
                .where(run_progress.c.run_id == run_id)
                .values(text="", updated_at=datetime.now(UTC))
            )


class ProgressRecorder:
    """Saves one attempt's growing answer in the background, at most every `interval`.

    `add` never waits for the database, so relaying the answer is not slowed by it;
    a save that fails is logged and the next one catches up (the log, not this row,
    holds the truth once the run ends).
    """

    def __init__(
        self,
        progress: RunProgress,
        run_id: str,
        thread_id: str,
        attempt: int,
        interval: float = SAVE_SECONDS,
    ) -> None:
        self.progress = progress
        self.run_id = run_id
        self.thread_id = thread_id
        self.attempt = attempt
        self.interval = interval
        self.text = TextBuffer()
        self.saved = 0
        # Whether this attempt wrote the run's row (what `RunProgress.ended` empties).
        self.written = False
        self._wake = asyncio.Event()
        self._closed = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    async def begin(self) -> None:
        """A later attempt says it generates from the start: listeners of an earlier
        attempt learn the answer starts again. A first attempt has no row to correct."""
        if self.attempt > 1:
            await self.progress.save(self.run_id, self.thread_id, self.attempt, "")
            self.written = True
        self._task = asyncio.create_task(self._loop(), name=f"progress {self.run_id}")

    def add(self, text: str) -> None:
        self.text.add(text)
        self._wake.set()

    async def stop(self) -> None:
        """Stop saving. A save in flight is left to finish, never cancelled (a write
        cancelled halfway could leave its connection holding SQLite's write lock),
        and waited for only briefly: a database that stopped answering must not
        hold up the run's end (its answer goes to the log next, which is what
        readers use once the run has ended)."""
        self._closed.set()
        self._wake.set()
        if self._task is not None:
            await asyncio.wait({self._task}, timeout=STOP_WAIT_SECONDS)

    async def _loop(self) -> None:
        while not self._closed.is_set():
            # The first save too waits a period: an answer done by then is not saved.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._closed.wait(), self.interval)
            if self._closed.is_set():
                return
            await self._wake.wait()
            self._wake.clear()
            if self._closed.is_set():
                return
            await self._save()

    async def _save(self) -> None:
        if self.text.length == self.saved:
            return
        text = self.text.text()
        try:
            await self.progress.save(self.run_id, self.thread_id, self.attempt, text)
            self.saved = len(text)
            self.written = True
        except Exception as exc:
            logger.warning("could not save the progress of run {}: {}", self.run_id, exc)
