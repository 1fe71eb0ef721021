"""The HTTP layer: routes translate HTTP into calls of the conversation services."""

from __future__ import annotations

from fastapi import APIRouter

from main_backend.api import langgraph
from main_backend.api.routes import admin, chat, run_stream, runs, service, threads

api_router = APIRouter()
api_router.include_router(service.router)
api_router.include_router(chat.router)
api_router.include_router(threads.router)
api_router.include_router(runs.router)
api_router.include_router(run_stream.router)
api_router.include_router(admin.router)
api_router.include_router(langgraph.router)
