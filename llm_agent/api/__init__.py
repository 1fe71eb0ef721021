"""The llm_agent HTTP layer: routes translate HTTP to calls of the generation service."""

from __future__ import annotations

from fastapi import APIRouter

from llm_agent.api.routes import generate, service

api_router = APIRouter()
api_router.include_router(service.router)
api_router.include_router(generate.router)
