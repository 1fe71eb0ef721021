"""Assistants: the one graph, `chat`, and its one assistant."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Path

from main_backend.api.deps import UserDep
from main_backend.api.errors import error_responses
from main_backend.api.langgraph import messages as lg
from main_backend.api.langgraph.routing import LangGraphRoute
from main_backend.api.langgraph.schemas import AssistantSearch
from main_backend.errors import AssistantNotFound

router = APIRouter(prefix="/assistants", route_class=LangGraphRoute)

_MISSING = error_responses("assistant_not_found")
AssistantId = Annotated[str, Path(min_length=1, max_length=64)]


def check_assistant(assistant_id: str) -> None:
    """The chat assistant is named by its graph's id or its UUID; no other exists."""
    if assistant_id not in (lg.GRAPH_ID, lg.ASSISTANT_ID):
        raise AssistantNotFound(assistant_id)


@router.post("/search")
async def search_assistants(
    user: UserDep,
    body: Annotated[AssistantSearch, Body(default_factory=AssistantSearch)],
) -> list[dict[str, Any]]:
    found = lg.assistant()
    matches = (
        body.graph_id in (None, lg.GRAPH_ID)
        and body.name in (None, lg.GRAPH_ID)
        and all(found["metadata"].get(k) == v for k, v in body.metadata.items())
    )
    return [found] if matches and body.offset == 0 else []


@router.get("/{assistant_id}", responses=_MISSING)
async def get_assistant(assistant_id: AssistantId, user: UserDep) -> dict[str, Any]:
    check_assistant(assistant_id)
    return lg.assistant()


@router.get("/{assistant_id}/graph", responses=_MISSING)
async def get_graph(assistant_id: AssistantId, user: UserDep) -> dict[str, Any]:
    check_assistant(assistant_id)
    nodes = ["__start__", lg.NODE, "__end__"]
    return {
        "nodes": [{"id": n, "type": "runnable", "data": n} for n in nodes],
        "edges": [
            {"source": "__start__", "target": lg.NODE},
            {"source": lg.NODE, "target": "__end__"},
        ],
    }


_MESSAGES_SCHEMA = {
    "type": "object",
    "properties": {"messages": {"type": "array", "items": {"type": "object"}}},
    "required": ["messages"],
}
_CONTEXT_SCHEMA = {
    "type": "object",
    "properties": {
        "model": {"type": "string"},
        "temperature": {"type": "number", "minimum": 0, "maximum": 2},
        "max_tokens": {"type": "integer", "minimum": 1},
        "system_prompt": {"type": "string"},
    },
}


@router.get("/{assistant_id}/schemas", responses=_MISSING)
async def get_schemas(assistant_id: AssistantId, user: UserDep) -> dict[str, Any]:
    check_assistant(assistant_id)
    return {
        "graph_id": lg.GRAPH_ID,
        "input_schema": _MESSAGES_SCHEMA,
        "output_schema": _MESSAGES_SCHEMA,
        "state_schema": _MESSAGES_SCHEMA,
        "config_schema": {"type": "object", "properties": {"configurable": _CONTEXT_SCHEMA}},
        "context_schema": _CONTEXT_SCHEMA,
    }
