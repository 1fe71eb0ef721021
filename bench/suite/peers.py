"""The peers: LangGraph's documented chatbot pattern, in this process.

`StateGraph(MessagesState)` with one node calling the same fake upstream through the
`openai` SDK (the messages converted by hand, no langchain_openai), compiled with
`AsyncSqliteSaver` (a fresh file) or `AsyncPostgresSaver` (a fresh database); one
`thread_id` per conversation and one `ainvoke` per turn with the new human message. The
node sends the whole history, as the pattern does (ours trims the prompt at
MAX_CONTEXT_TOKENS). The `DeltaChannel` variant (langgraph 1.2's beta channel that
checkpoints only each step's writes and a snapshot every `snapshot_frequency` updates)
is the same graph with `messages` on a `DeltaChannel` over `add_messages`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Annotated, Any, Literal, TypedDict, cast

import openai
from langchain_core.messages import AIMessage, AnyMessage, HumanMessage
from langgraph.checkpoint.base import BaseCheckpointSaver
from langgraph.checkpoint.postgres.aio import AsyncPostgresSaver
from langgraph.checkpoint.sqlite.aio import AsyncSqliteSaver
from langgraph.graph import END, START, MessagesState, StateGraph
from langgraph.graph.message import add_messages
from langgraph.graph.state import CompiledStateGraph

from bench.suite.common import MODEL

try:  # langgraph >= 1.2 (beta)
    from langgraph.channels import DeltaChannel

    HAS_DELTA = True
except ImportError:  # pragma: no cover - depends on the installed langgraph
    HAS_DELTA = False

Variant = Literal["messages", "delta"]
ROLES = {"human": "user", "ai": "assistant", "system": "system"}


def _add_message_batches(state: list[AnyMessage], writes: Sequence[Any]) -> list[AnyMessage]:
    """`add_messages` over a batch of writes, as a `DeltaChannel` reducer wants it."""
    for write in writes:
        state = add_messages(cast(Any, state), write)  # type: ignore[assignment]
    return state


if HAS_DELTA:

    class DeltaMessagesState(TypedDict):
        messages: Annotated[list[AnyMessage], DeltaChannel(_add_message_batches)]


def variants() -> list[Variant]:
    return ["messages", "delta"] if HAS_DELTA else ["messages"]


def label(variant: Variant, engine_label: str) -> str:
    name = "LangGraph" if variant == "messages" else "LangGraph DeltaChannel"
    return f"{name} {engine_label}"


def build(
    variant: Variant, saver: BaseCheckpointSaver[Any], client: openai.AsyncOpenAI
) -> CompiledStateGraph[Any, Any, Any, Any]:
    async def model(state: Any) -> dict[str, Any]:
        prompt: list[Any] = [
            {"role": ROLES.get(m.type, "user"), "content": m.content} for m in state["messages"]
        ]
        answer = await client.chat.completions.create(model=MODEL, messages=prompt)
        return {"messages": [AIMessage(content=answer.choices[0].message.content or "")]}

    schema: Any = MessagesState if variant == "messages" else DeltaMessagesState
    builder = StateGraph(schema)
    builder.add_node("model", model)
    builder.add_edge(START, "model")
    builder.add_edge("model", END)
    return builder.compile(checkpointer=saver)


@asynccontextmanager
async def saver(engine_key: str, target: str) -> AsyncIterator[BaseCheckpointSaver[Any]]:
    """The engine's async saver on `target` (a file path, or a Postgres URL), set up."""
    if engine_key == "sqlite":
        async with AsyncSqliteSaver.from_conn_string(target) as sqlite_saver:
            await sqlite_saver.setup()
            yield sqlite_saver
    else:
        async with AsyncPostgresSaver.from_conn_string(target) as pg_saver:
            await pg_saver.setup()
            yield pg_saver


async def turn(graph: CompiledStateGraph[Any, Any, Any, Any], thread_id: str, text: str) -> str:
    """One turn: the new human message in, the answer out."""
    result = await graph.ainvoke(
        {"messages": [HumanMessage(content=text)]},
        {"configurable": {"thread_id": thread_id}},
    )
    return str(result["messages"][-1].content)
