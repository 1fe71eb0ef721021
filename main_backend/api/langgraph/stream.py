"""A run's stream as LangGraph's SSE: `metadata` first, then per stream mode `values`
(the state when the run starts and when it ends), `messages` (`messages-tuple`: each
piece of the answer as `[chunk, metadata]`) and `updates` (the chat node's answer); a
failed run's `error`.

The events come from the native stream (conversation/streams.py), so a LangGraph client
resumes like a native one, on any replica: the last SSE event made from a native event
carries that event's id; one made before it (a run's end makes `updates` then `values`)
carries `<previous native id>|<index>`, "after that native event, and this many of the
next one's" (`resume_point`). Either way a rejoin with `Last-Event-ID` continues right
after the event it names: nothing lost, nothing repeated.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any, Literal, get_args

from main_backend.api.langgraph import messages as lg
from main_backend.api.streaming import Framing
from main_backend.conversation.graph import RunDelta, RunEnded, RunStarted
from main_backend.conversation.ids import answer_message_id
from main_backend.conversation.runs import answered_path
from main_backend.conversation.streams import RunRestarted, Sent
from main_backend.errors import InvalidRequest
from main_backend.events.fold import MessageState
from main_backend.events.store import EventStore
from stubichat_common.sse import sse_event

StreamMode = Literal["values", "messages-tuple", "updates", "custom"]
STREAM_MODES: tuple[str, ...] = get_args(StreamMode)
# The LangGraph stream modes this graph has nothing for, and why they are refused.
_UNSUPPORTED = {
    "messages": "use messages-tuple: the chat UIs' mode for pieces of the answer",
    "events": "the chat graph streams no LangChain callback events",
    "debug": "the chat graph streams no debug events",
    "tasks": "the chat graph streams no task events",
    "checkpoints": "checkpoints are read with /history instead",
}
# What a join that names no mode streams: the run's modes are not stored.
JOIN_MODES: frozenset[str] = frozenset({"values", "messages-tuple"})
# The JS client's Last-Event-ID for "from the start".
FROM_START = "-1"
_PART = re.compile(r"(.{0,40})\|([0-9]{1,2})")


def resume_point(last_event_id: str | None) -> tuple[str | None, int, bool]:
    """Where a client that saw `last_event_id` resumes: after that native event id
    (None: before the first), skipping how many SSE events of the next one, and whether
    it is the stream's start (it gets `metadata` then)."""
    if last_event_id in (None, "", FROM_START):
        return None, 0, True
    assert last_event_id is not None
    part = _PART.fullmatch(last_event_id)
    if part is None:
        return last_event_id, 0, False  # a native id: the native stream judges it
    return part[1] or None, int(part[2]) + 1, False


def stream_modes(given: str | Sequence[str] | None, field: str = "stream_mode") -> frozenset[str]:
    """The modes asked for, refused with a clear reason if this graph has nothing for one."""
    if given is None:
        return frozenset({"values"})
    asked = [given] if isinstance(given, str) else list(given)
    for mode in asked:
        if mode not in STREAM_MODES:
            reason = _UNSUPPORTED.get(mode, f"supported: {', '.join(STREAM_MODES)}")
            raise InvalidRequest(f"stream mode {mode!r} is not supported: {reason}", field)
    return frozenset(asked)


class LangGraphFraming(Framing):
    """One run's native stream events written as LangGraph's."""

    def __init__(
        self,
        store: EventStore,
        thread_id: str,
        run_id: str,
        attempt: int,
        modes: frozenset[str],
        *,
        from_start: bool,
        after: str | None = None,
        skip: int = 0,
    ) -> None:
        self.store = store
        self.thread_id = thread_id
        self.run_id = run_id
        self.attempt = attempt
        self.modes = modes
        self.from_start = from_start
        # The native id of the last event framed, and SSE events of the next to skip
        # (`resume_point`).
        self._after = after
        self._skip = skip
        self._path: list[MessageState] | None = None
        self._chunk_metadata = {
            **lg.GRAPH_METADATA,
            "run_id": run_id,
            "thread_id": thread_id,
            "langgraph_node": lg.NODE,
            "langgraph_step": 1,
            "langgraph_triggers": [f"branch:to:{lg.NODE}"],
            "langgraph_path": ["__pregel_pull", lg.NODE],
            "langgraph_checkpoint_ns": "",
        }

    def opening(self) -> list[bytes]:
        if not self.from_start:
            return []
        return [sse_event("metadata", {"run_id": self.run_id, "attempt": self.attempt})]

    async def frames(self, sent: Sent) -> list[bytes]:
        made = await self._events(sent)
        last = len(made) - 1
        ids = [f"{self._after or ''}|{i}" for i in range(last)] + [sent.id]
        skip, self._skip, self._after = self._skip, 0, sent.id
        return [sse_event(name, data, ids[i]) for i, (name, data) in enumerate(made) if i >= skip]

    def unended(self, error: dict[str, Any]) -> bytes:
        return sse_event("error", {"error": error["code"], "message": error["message"]})

    async def _events(self, sent: Sent) -> list[tuple[str, Any]]:
        event = sent.event
        if isinstance(event, RunStarted | RunRestarted):
            if "values" not in self.modes:
                return []
            return [("values", lg.values(await self._answered()))]
        if isinstance(event, RunDelta):
            if "messages-tuple" not in self.modes:
                return []
            chunk = lg.lc_chunk(answer_message_id(self.run_id), event.text)
            return [("messages", [chunk, self._chunk_metadata])]
        if isinstance(event, RunEnded):
            return await self._ended(event)
        return []  # queued: nothing happens in the graph until the run starts

    async def _ended(self, ended: RunEnded) -> list[tuple[str, Any]]:
        if ended.status == "failed":
            error = ended.error or {}
            code = str(error.get("code", "internal_error"))
            return [("error", {"error": code, "message": error.get("message", "the run failed")})]
        if ended.message is None or ended.cancelled_by == "rollback":
            return []  # nothing was answered, or the answer left the history
        made: list[tuple[str, Any]] = []
        answer = lg.lc_message(ended.message)
        if "updates" in self.modes:
            made.append(("updates", {lg.NODE: {"messages": [answer]}}))
        if "values" in self.modes:
            made.append(("values", lg.values([*await self._answered(), ended.message])))
        return made

    async def _answered(self) -> list[MessageState]:
        if self._path is None:
            self._path = await answered_path(self.store, self.thread_id, self.run_id)
        return self._path
