"""LangGraph Server's HTTP API, the subset a chat frontend's SDK uses, under
`/langgraph`: a thin adapter over the same conversation services as the native API
(docs/api.md, "LangGraph API")."""

from __future__ import annotations

from fastapi import APIRouter

from main_backend.api.langgraph import assistants, runs, threads

PREFIX = "/langgraph"

router = APIRouter(prefix=PREFIX, tags=["langgraph"])
router.include_router(assistants.router)
router.include_router(threads.router)
router.include_router(runs.router)
