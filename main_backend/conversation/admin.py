"""What operators see: every thread, the raw log, replays, and the read models' health.

A replay folds a thread from its events up to a version (every branch as it stood then,
the path active then marked); at the thread's current version the read model is that
fold already (`GET /admin/projections/verify` checks it), so it is read, not redone. It
builds its
prompt with `prompt_at`, the very function the turn graph's `call_llm` node
calls, so it shows exactly what the model saw
(docs/design.md, principle 4). Re-running a replay calls the LLM agent and appends
nothing. Nothing here knows about HTTP.
"""

from __future__ import annotations

from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

from main_backend.conversation.prompt import Prompt, prompt_at
from main_backend.conversation.threads import page_threads
from main_backend.errors import InvalidEvent, InvalidRequest, ThreadNotFound
from main_backend.events import projections
from main_backend.events.fold import MessageState, ThreadState, fold
from main_backend.events.projections import RebuildReport, VerifyReport
from main_backend.events.store import EventStore
from main_backend.events.types import RUN_STARTED, RunStartedData, StoredEvent, read_data
from main_backend.llm_client import LLMAgentClient, LLMDelta, LLMDone
from main_backend.settings import Settings


@dataclass(frozen=True, slots=True)
class Replay:
    """A thread as of `at_version`, and the prompt a turn at that version sends."""

    at_version: int
    thread: ThreadState
    messages: list[MessageState]
    prompt: Prompt
    model: str
    params: dict[str, Any]
    # True when a run of the thread was started on this very prompt (model and
    # params are then the ones it used), False when they are a new turn's defaults.
    recorded: bool


@dataclass(frozen=True, slots=True)
class Rerun:
    """The answer of a replayed prompt; nothing of it is stored."""

    replay: Replay
    model: str
    params: dict[str, Any]
    content: str
    usage: dict[str, Any] | None
    finish_reason: str | None
    # The model the agent reports it used.
    answered_by: str


class AdminService:
    def __init__(self, store: EventStore, llm: LLMAgentClient, settings: Settings) -> None:
        self.store = store
        self.llm = llm
        self.settings = settings

    async def list_threads(
        self, owner: str | None, include_deleted: bool, limit: int, cursor: str | None
    ) -> tuple[list[ThreadState], str | None]:
        """Every user's threads (or one owner's), most recently updated first."""
        return await page_threads(
            self.store, owner=owner, include_deleted=include_deleted, limit=limit, cursor=cursor
        )

    async def thread_events(
        self, thread_id: str, from_version: int, limit: int
    ) -> tuple[list[StoredEvent], int | None]:
        """One thread's events from `from_version`, and where the next page starts."""
        await self._current_version(thread_id)
        found = await self.store.read_thread(thread_id, from_version=from_version, limit=limit + 1)
        page = found[:limit]
        return page, page[-1].version + 1 if len(found) > limit else None

    async def events_after(self, after_position: int, limit: int) -> tuple[list[StoredEvent], int]:
        """Every thread's events in feed order (see `EventStore.read_all`) after the event
        at `after_position`, and the position to read on from: the last event's."""
        page = await self.store.read_all(after_position, limit)
        return page, page[-1].position if page else after_position

    async def replay(self, thread_id: str, at_version: int | None) -> Replay:
        """The thread folded from its events up to `at_version` (default: all), and the
        prompt `prompt_at` builds there, with the model and params of the run that was
        started on that prompt if there is one, else those a new turn would use."""
        current = await self._current_version(thread_id)
        at = current if at_version is None else at_version
        if not 1 <= at <= current:
            raise InvalidRequest(f"at_version must be between 1 and {current}", "at_version")
        async with self.store.db.engine.connect() as conn:
            found = await projections.load_thread(conn, thread_id)
            if found is not None and found.version == at:
                # The thread as it is: no run was started on this prompt (its run.started
                # would be in the same append, so at a later version).
                thread, started = found, None
                messages = await projections.load_messages(conn, thread_id, at)
            else:
                # A run's run.started is appended right after its input, in the same
                # append: the run started on the prompt at version N, if any, is event N + 1.
                events = await projections.read_for_fold(conn, thread_id, at + 1)
                folded, messages = fold(events[:at])
                assert folded is not None
                thread = folded
                started = next(
                    (
                        data
                        for e in events[at:]
                        if (data := _run_started(e)) is not None and data["prompt_version"] == at
                    ),
                    None,
                )
        # The run started there answers its `parent_id` (a regeneration answers a question
        # off the active path); a new turn would answer the active leaf of then.
        answered = started.get("parent_id") if started is not None else None
        leaf = answered if isinstance(answered, str) else thread.head_id
        prompt = await prompt_at(
            self.store,
            thread,
            leaf,
            self.settings.system_prompt,
            self.settings.max_context_tokens,
        )
        if started is not None:
            model, params = started["model"], dict(started["params"])
        else:
            model = self.settings.default_model
            params = {"temperature": self.settings.temperature, "max_tokens": None}
        return Replay(at, thread, messages, prompt, model, params, started is not None)

    async def rerun(
        self,
        thread_id: str,
        at_version: int | None,
        *,
        model: str | None,
        temperature: float | None,
        max_tokens: int | None,
        request_id: str | None,
    ) -> Rerun:
        """Send the replayed prompt to the LLM agent again, with the replay's model and
        params unless overridden; the answer is returned, never appended."""
        replay = await self.replay(thread_id, at_version)
        if not any(m["role"] != "system" for m in replay.prompt.messages):
            # The agent would refuse it (422, passed on as a 502): say why, call nothing.
            raise InvalidRequest(
                f"the thread has no messages at version {replay.at_version}: "
                "there is nothing to answer",
                "at_version",
            )
        chosen_model = model or replay.model
        params = dict(replay.params)
        if temperature is not None:
            params["temperature"] = temperature
        if max_tokens is not None:
            params["max_tokens"] = max_tokens
        self._check(chosen_model, params)
        parts: list[str] = []
        done: LLMDone | None = None
        stream = self.llm.stream(
            replay.prompt.messages,
            model=chosen_model,
            temperature=params["temperature"],
            max_tokens=params.get("max_tokens"),
            request_id=request_id,
        )
        async with aclosing(stream) as items:  # type: ignore[type-var]
            async for item in items:
                if isinstance(item, LLMDelta):
                    parts.append(item.text)
                else:
                    done = item
        assert done is not None  # the client raises LLMError when the stream has no end
        return Rerun(
            replay,
            chosen_model,
            params,
            "".join(parts),
            done.usage,
            done.finish_reason,
            done.model or chosen_model,
        )

    async def rebuild_projections(self) -> RebuildReport:
        return await projections.rebuild(self.store.db)

    async def verify_projections(self) -> VerifyReport:
        return await projections.verify(self.store.db)

    def _check(self, model: str, params: dict[str, Any]) -> None:
        """The limits a chat request is held to."""
        for field, message in self.settings.parameter_problems(model, params.get("max_tokens")):
            raise InvalidRequest(message, field)

    async def _current_version(self, thread_id: str) -> int:
        """The thread's version according to the log; deleted threads count, unknown ones
        are not found."""
        version = await self.store.current_version(thread_id)
        if version == 0:
            raise ThreadNotFound(thread_id)
        return version


def _run_started(event: StoredEvent) -> RunStartedData | None:
    """A `run.started` event's data, if it is one that holds what a rerun needs."""
    if event.type != RUN_STARTED:
        return None
    try:
        return read_data(event, RunStartedData, "model", "params", "prompt_version")
    except InvalidEvent:
        return None
