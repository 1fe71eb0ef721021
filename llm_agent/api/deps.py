"""FastAPI dependencies: what routes get from the app, and the bearer-token guard."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from llm_agent.errors import Unauthorized
from llm_agent.generation import Generator
from llm_agent.metrics import Metrics
from llm_agent.settings import Settings
from stubichat_common.auth import bearer_matches
from stubichat_common.routing import auth_guard


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_generator(request: Request) -> Generator:
    generator: Generator = request.app.state.generator
    return generator


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def get_request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


SettingsDep = Annotated[Settings, Depends(get_settings)]
GeneratorDep = Annotated[Generator, Depends(get_generator)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
RequestIdDep = Annotated[str | None, Depends(get_request_id)]


@auth_guard
def require_token(request: Request) -> None:
    """Guard every non-public route when LLM_AGENT_TOKEN is set."""
    expected = get_settings(request).llm_agent_token
    if not expected:
        return
    if not bearer_matches(request.headers.get("authorization"), expected):
        raise Unauthorized("a valid 'Authorization: Bearer <LLM_AGENT_TOKEN>' header is required")
