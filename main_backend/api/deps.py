"""FastAPI dependencies: the services a route needs, and who is asking."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from main_backend.auth import LOCAL_USER, check_admin, user_from_authorization
from main_backend.conversation.chat import ChatService
from main_backend.conversation.leases import RunLeases
from main_backend.conversation.runner import TurnRunner
from main_backend.conversation.threads import ThreadService
from main_backend.events.store import EventStore
from main_backend.llm_client import LLMAgentClient
from main_backend.metrics import Metrics
from main_backend.settings import Settings
from stubichat_common.routing import auth_guard


def _state(name: str):  # type: ignore[no-untyped-def]
    def get(request: Request) -> object:
        return getattr(request.app.state, name)

    return get


def get_request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


@auth_guard
def current_user(request: Request) -> str:
    settings: Settings = request.app.state.settings
    if settings.auth_mode == "none":
        return LOCAL_USER
    assert settings.secret_key is not None
    return user_from_authorization(
        request.headers.get("authorization"),
        settings.secret_key,
        settings.jwt_audience,
        settings.jwt_issuer,
    )


@auth_guard
def require_admin(request: Request) -> None:
    check_admin(request.headers.get("authorization"), request.app.state.settings.admin_token)


SettingsDep = Annotated[Settings, Depends(_state("settings"))]
MetricsDep = Annotated[Metrics, Depends(_state("metrics"))]
ChatDep = Annotated[ChatService, Depends(_state("chat"))]
ThreadsDep = Annotated[ThreadService, Depends(_state("threads"))]
RunnerDep = Annotated[TurnRunner, Depends(_state("runner"))]
LeasesDep = Annotated[RunLeases, Depends(_state("leases"))]
StoreDep = Annotated[EventStore, Depends(_state("store"))]
LLMDep = Annotated[LLMAgentClient, Depends(_state("llm"))]
RequestIdDep = Annotated[str | None, Depends(get_request_id)]
UserDep = Annotated[str, Depends(current_user)]
