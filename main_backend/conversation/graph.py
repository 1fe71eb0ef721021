"""The turn graph (LangGraph): record the input → call the LLM → record the outcome.

The prompt sent upstream is built in `call_llm`, and only there: `prompt.prompt_at`
from the message the run answers (`parent_id` in its `run.started` event) gives the
system prompt, then the newest of that message's path that fits in MAX_CONTEXT_TOKENS,
read once. A message and its ancestors never change, so the prompt is a function of
the log and of the settings (SYSTEM_PROMPT, MAX_CONTEXT_TOKENS) alone: a run resumed after a crash,
here or on another replica with the same settings, sends the prompt its first attempt
sent, and the admin replay, which calls `prompt_at` too, shows it.

The checkpointed state holds identifiers, versions and this turn's outcome, never the
history or the prompt, so a checkpoint's size does not grow with the thread. What is
per-invocation and not durable (the input to record, the cancel signal) travels in the
runtime context instead.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from typing import Any, Literal, TypedDict, cast

from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.config import get_stream_writer
from langgraph.graph import END, START, StateGraph
from langgraph.graph.state import CompiledStateGraph
from langgraph.runtime import Runtime
from loguru import logger

from main_backend.conversation.ids import (
    answer_message_event_id,
    answer_message_id,
    input_event_id,
    rollback_head_event_id,
    rolled_back_event_id,
    run_started_id,
    terminal_event_id,
)
from main_backend.conversation.progress import ProgressRecorder, RunProgress, TextBuffer
from main_backend.conversation.prompt import prompt_at, prompt_on_path, system_prompt_for
from main_backend.conversation.turns import TurnPlan
from main_backend.errors import EventIdConflict, VersionConflict
from main_backend.events.fold import MessageState, message_from_event
from main_backend.events.store import EventStore
from main_backend.events.types import (
    MESSAGE_ADDED,
    RUN_CANCELLED,
    RUN_COMPLETED,
    RUN_FAILED,
    RUN_ROLLED_BACK,
    THREAD_HEAD_MOVED,
    CancelledBy,
    MessageAddedData,
    NewEvent,
    RunCompletedData,
    RunFailedData,
    RunStartedData,
    StoredEvent,
    new_event,
    read_cancelled_by,
    read_data,
)
from main_backend.llm_client import LLMAgentClient, LLMDelta, LLMDone, LLMError


class TurnState(TypedDict, total=False):
    thread_id: str
    run_id: str
    request_id: str | None
    user: str
    recorded: bool
    model: str
    params: dict[str, Any]
    prompt_version: int
    # The message the run answers (its answer hangs under it); None for a run started
    # before threads were trees: then the thread's active leaf, its input.
    parent_id: str | None
    # The thread's version once the input was recorded: where the outcome is appended
    # unless the thread moved meanwhile (None: read it then).
    version: int | None
    outcome: dict[str, Any]


@dataclass
class TurnContext:
    """Per invocation; never checkpointed."""

    plan: TurnPlan | None = None
    cancel: asyncio.Event = field(default_factory=asyncio.Event)
    # Who asked the run to stop, once `cancel` is set.
    cancel_reason: CancelledBy = "user"
    # Which generation of the run this is: 1, then one more per take-over.
    attempt: int = 1
    # Whether this invocation wrote the run's progress row (None: not known here, as
    # when it resumed after call_llm); record_outcome empties only a row there may be.
    progress_written: bool | None = None


# What the graph streams (stream_mode="custom") to whoever listens.
@dataclass(frozen=True, slots=True)
class RunStarted:
    thread_id: str
    run_id: str
    version: int
    messages: list[MessageState]


@dataclass(frozen=True, slots=True)
class RunDelta:
    text: str


@dataclass(frozen=True, slots=True)
class RunEnded:
    status: Literal["completed", "failed", "cancelled"]
    thread_id: str
    run_id: str
    version: int
    model: str
    message: MessageState | None = None
    usage: dict[str, Any] | None = None
    finish_reason: str | None = None
    error: dict[str, Any] | None = None
    partial_content: str = ""
    latency_ms: float | None = None
    ttft_ms: float | None = None
    cancelled_by: CancelledBy | None = None


@dataclass(frozen=True)
class TurnDeps:
    store: EventStore
    llm: LLMAgentClient
    default_system_prompt: str | None
    max_context_tokens: int
    progress: RunProgress


def build_turn_graph(
    deps: TurnDeps, checkpointer: BaseCheckpointSaver[str] | None
) -> CompiledStateGraph[TurnState, TurnContext, TurnState, TurnState]:
    store = deps.store

    async def record_input(state: TurnState, runtime: Runtime[TurnContext]) -> TurnState:
        plan = runtime.context.plan
        if plan is None:
            # A take-over of a run whose first driver died after this node's append but
            # before LangGraph saved its writes: the input is in the log, read it back.
            started = await store.get_event(run_started_id(state["run_id"]))
            if started is None:
                raise LookupError(f"run {state['run_id']} has no run.started event")
            return recorded_input(started)
        result = await store.append(plan.thread_id, plan.events, plan.expected_version)
        messages = [message_from_event(e) for e in result.events if e.type == MESSAGE_ADDED]
        get_stream_writer()(RunStarted(plan.thread_id, plan.run_id, result.version, messages))
        return {
            "recorded": True,
            "model": plan.model,
            "params": plan.params,
            "prompt_version": plan.prompt_version,
            "parent_id": plan.parent_id,
            "version": result.version,
        }

    async def call_llm(state: TurnState, runtime: Runtime[TurnContext]) -> TurnState:
        """Send the prompt at the run's `prompt_version` upstream; relay the answer."""
        plan, parent_id = runtime.context.plan, state.get("parent_id")
        if plan is not None and parent_id is not None:
            # The plan read the thread: its system prompt is fixed at its creation.
            prompt = await prompt_on_path(
                store,
                state["thread_id"],
                parent_id,
                system_prompt_for(plan.system_prompt, deps.default_system_prompt),
                deps.max_context_tokens,
            )
        else:
            thread = await store.get_thread(state["thread_id"])
            assert thread is not None
            prompt = await prompt_at(
                store,
                thread,
                parent_id or thread.head_id,
                deps.default_system_prompt,
                deps.max_context_tokens,
            )
        params = state["params"]
        stream = deps.llm.stream(
            prompt.messages,
            model=state["model"],
            temperature=params["temperature"],
            max_tokens=params.get("max_tokens"),
            request_id=state.get("request_id"),
        )
        recorder = ProgressRecorder(
            deps.progress, state["run_id"], state["thread_id"], runtime.context.attempt
        )
        await recorder.begin()
        try:
            outcome = await _generate(stream, runtime.context.cancel, state["model"], recorder.add)
        finally:
            await recorder.stop()
            runtime.context.progress_written = recorder.written
        if outcome["status"] == "cancelled":
            outcome["cancelled_by"] = runtime.context.cancel_reason
        return {"outcome": outcome}

    async def record_outcome(state: TurnState, runtime: Runtime[TurnContext]) -> TurnState:
        ended = await append_outcome(store, state)
        logger.info("run {} at thread version {}", ended.status, ended.version)
        get_stream_writer()(ended)
        if runtime.context.progress_written is not False:
            try:
                await deps.progress.ended(state["run_id"])
            except Exception as exc:  # only keeps a spent row bigger than it need be
                logger.warning("could not trim the progress of the ended run: {}", exc)
        return {}

    graph = StateGraph(TurnState, context_schema=TurnContext)
    graph.add_node("record_input", record_input)
    graph.add_node("call_llm", call_llm)
    graph.add_node("record_outcome", record_outcome)
    # A run resumed from its run.started event has its input recorded already.
    graph.add_conditional_edges(
        START,
        lambda s: "call_llm" if s.get("recorded") else "record_input",
        ["record_input", "call_llm"],
    )
    graph.add_edge("record_input", "call_llm")
    graph.add_edge("call_llm", "record_outcome")
    graph.add_edge("record_outcome", END)
    return graph.compile(checkpointer=checkpointer)


def fresh_state(state: TurnState) -> TurnState:
    """A run's input: `state`, with every other field of TurnState cleared (None).

    A thread's runs share its LangGraph thread, and a channel keeps its value until
    written: an input that left a field out would hand the previous run's value to
    this one (a `recorded` left set would even skip `record_input`). None is "not
    known yet": each node reads a field only after the node that writes it.
    """
    return cast(TurnState, {**dict.fromkeys(TurnState.__annotations__), **state})


def recorded_input(started: StoredEvent) -> TurnState:
    """What `record_input` returned, from the run's stored `run.started` event."""
    data = read_data(started, RunStartedData)
    return {
        "recorded": True,
        "model": data["model"],
        "params": data["params"],
        "prompt_version": data["prompt_version"],
        "parent_id": data.get("parent_id"),
    }


async def _generate(
    stream: AsyncIterator[LLMDelta | LLMDone],
    cancel: asyncio.Event,
    model: str,
    on_text: Callable[[str], None],
) -> dict[str, Any]:
    """Relay the answer as it streams (to listeners here and to `on_text`, which
    saves it for the other replicas); stop at once when the run is cancelled."""
    write = get_stream_writer()
    answer = TextBuffer()  # not a string per delta: an answer may have thousands
    started = time.perf_counter()
    iterator = aiter(stream)
    try:
        while True:
            next_item = asyncio.ensure_future(anext(iterator))
            cancelled = asyncio.ensure_future(cancel.wait())
            await asyncio.wait({next_item, cancelled}, return_when=asyncio.FIRST_COMPLETED)
            cancelled.cancel()
            if not next_item.done():
                next_item.cancel()
                # Let the stream unwind before it is closed below.
                with contextlib.suppress(BaseException):
                    await next_item
                return {"status": "cancelled", "content": answer.text(), "model": model}
            try:
                item = next_item.result()
            except StopAsyncIteration:
                raise LLMError(
                    "llm_upstream_error", "the answer ended unexpectedly", retryable=True
                ) from None
            if isinstance(item, LLMDelta):
                answer.add(item.text)
                write(RunDelta(item.text))
                on_text(item.text)
                continue
            return {
                "status": "completed",
                "content": answer.text(),
                "model": item.model or model,
                "finish_reason": item.finish_reason,
                "usage": item.usage,
                "latency_ms": item.latency_ms,
                "ttft_ms": item.ttft_ms,
            }
    except LLMError as error:
        logger.warning("LLM call failed: {} {}", error.code, error.message)
        return {
            "status": "failed",
            "content": answer.text(),
            "model": model,
            "error": {
                "code": error.code,
                "message": error.message,
                "retryable": error.retryable,
                "retry_after": error.retry_after,
            },
            "latency_ms": round((time.perf_counter() - started) * 1000, 1),
        }
    finally:
        await iterator.aclose()  # type: ignore[attr-defined]


@dataclass(frozen=True, slots=True)
class Rollback:
    """What a rollback takes out of the tree (the run's input messages, by id; its answer
    too) and the active leaf it returns to."""

    inputs: list[str]
    head_id: str | None


def outcome_events(state: TurnState, rollback: Rollback | None = None) -> list[NewEvent]:
    """The events that end the run: one terminal event, with the answer if there is one;
    after a rollback's cancel, the `run.rolled_back` of the answer and its inputs, and
    the active leaf's return."""
    run_id, outcome = state["run_id"], state["outcome"]
    metadata = {"request_id": state.get("request_id"), "user": state.get("user")}
    data: MessageAddedData = {
        "message_id": answer_message_id(run_id),
        "role": "assistant",
        "content": outcome["content"],
        "run_id": run_id,
        "partial": outcome["status"] != "completed",
    }
    if state.get("parent_id") is not None:
        data["parent_id"] = state["parent_id"]
    answer = new_event(MESSAGE_ADDED, data, metadata, answer_message_event_id(run_id))
    terminal_id = terminal_event_id(run_id)
    # "model" is what the agent reports it used.
    model = outcome["model"]
    if outcome["status"] == "completed":
        return [
            answer,
            new_event(
                RUN_COMPLETED,
                {
                    "run_id": run_id,
                    "message_id": answer_message_id(run_id),
                    "model": model,
                    "finish_reason": outcome["finish_reason"],
                    "usage": outcome["usage"],
                    "latency_ms": outcome["latency_ms"],
                    "ttft_ms": outcome["ttft_ms"],
                },
                metadata,
                terminal_id,
            ),
        ]
    if outcome["status"] == "cancelled":
        by = read_cancelled_by(outcome.get("cancelled_by"))
        ended = [
            answer,
            new_event(
                RUN_CANCELLED,
                {
                    "run_id": run_id,
                    "message_id": answer_message_id(run_id),
                    "model": model,
                    "cancelled_by": by,
                },
                metadata,
                terminal_id,
            ),
        ]
        if by == "rollback" and rollback is not None:
            # After the terminal event: `terminal_events` reads it and the answer before it.
            gone = [*rollback.inputs, answer_message_id(run_id)]
            ended += [
                new_event(
                    RUN_ROLLED_BACK,
                    {"run_id": run_id, "message_ids": gone},
                    metadata,
                    rolled_back_event_id(run_id),
                ),
                new_event(
                    THREAD_HEAD_MOVED,
                    {"message_id": rollback.head_id},
                    metadata,
                    rollback_head_event_id(run_id),
                ),
            ]
        return ended
    error = outcome["error"]
    return [
        new_event(
            RUN_FAILED,
            {
                "run_id": run_id,
                "error": {"code": error["code"], "message": error["message"]},
                "partial_content": outcome["content"],
                "model": model,
            },
            metadata,
            terminal_id,
        )
    ]


async def append_outcome(store: EventStore, state: TurnState) -> RunEnded:
    """Append the run's end (idempotently) and describe it."""
    thread_id, run_id, outcome = state["thread_id"], state["run_id"], state["outcome"]
    rollback = None
    if outcome["status"] == "cancelled" and outcome.get("cancelled_by") == "rollback":
        rollback = await _rollback(store, state)
    events = outcome_events(state, rollback)
    # Where the input left the thread, unless a rollback moved it or it is not known.
    version = state.get("version") if rollback is None else None
    while True:
        if version is None:
            version = await store.current_version(thread_id)
        try:
            result = await store.append(thread_id, events, version)
            return ended_from_events(
                [e for e in result.events if e.type not in _AFTER_THE_END], outcome.get("error")
            )
        except VersionConflict:
            version = None  # a title change landed meanwhile; the ids keep this idempotent
            continue
        except EventIdConflict:
            # The run was ended by someone else (closed as interrupted): report that.
            stored = await terminal_events(store, thread_id, run_id)
            return ended_from_events(stored, None)


# What a rollback appends after the run's terminal event.
_AFTER_THE_END = frozenset({RUN_ROLLED_BACK, THREAD_HEAD_MOVED})


async def _rollback(store: EventStore, state: TurnState) -> Rollback:
    """The run's inputs, and where the active leaf returns: the newest leaf under the
    message the run started from (the leaf of then, for a new turn; for an edit or a
    regeneration, the newest of the branches beside it), without what is rolled back."""
    inputs = await recorded_inputs(store, state["run_id"])
    start = inputs[0].parent_id if inputs else state.get("parent_id")
    ids = [m.message_id for m in inputs]
    return Rollback(ids, await store.newest_leaf(state["thread_id"], start, skip=ids))


async def recorded_inputs(store: EventStore, run_id: str) -> list[MessageState]:
    """The messages the run answers, as recorded with its `run.started` (by their ids)."""
    messages: list[MessageState] = []
    index = 1
    while (event := await store.get_event(input_event_id(run_id, index))) is not None:
        if event.type == MESSAGE_ADDED:
            messages.append(message_from_event(event))
        index += 1
    return messages


async def terminal_events(store: EventStore, thread_id: str, run_id: str) -> list[StoredEvent]:
    """The run's terminal event, and the answer appended with it, from the log."""
    terminal = await store.get_event(terminal_event_id(run_id))
    if terminal is None:
        return []
    return await store.read_thread(
        thread_id, from_version=max(1, terminal.version - 1), to_version=terminal.version
    )


def ended_from_events(events: list[StoredEvent], error: dict[str, Any] | None) -> RunEnded:
    """The `RunEnded` that a run's stored terminal events describe."""
    terminal = events[-1]
    run_id = terminal.data["run_id"]
    answer = next(
        (
            message_from_event(e)
            for e in events
            if e.type == MESSAGE_ADDED and e.data["run_id"] == run_id
        ),
        None,
    )
    common = {
        "thread_id": terminal.thread_id,
        "run_id": run_id,
        "version": terminal.version,
        "model": terminal.data.get("model", ""),
    }
    if terminal.type == RUN_COMPLETED:
        completed = read_data(terminal, RunCompletedData)
        return RunEnded(
            "completed",
            message=answer,
            usage=completed["usage"],
            finish_reason=completed["finish_reason"],
            latency_ms=completed["latency_ms"],
            ttft_ms=completed["ttft_ms"],
            **common,
        )
    if terminal.type == RUN_CANCELLED:
        by = read_cancelled_by(terminal.data.get("cancelled_by"))
        return RunEnded("cancelled", message=answer, cancelled_by=by, **common)
    failed = read_data(terminal, RunFailedData)
    return RunEnded(
        "failed",
        error={**(error or {}), **failed["error"]},
        partial_content=failed["partial_content"],
        **common,
    )
