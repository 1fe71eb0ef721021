"""FastAPI dependencies: the services a route needs, and who is asking."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Request

from main_backend.auth import LOCAL_USER, check_admin, user_from_authorization
from main_backend.conversation.admin import AdminService
from main_backend.conversation.chat import ChatService
from main_backend.conversation.runs import RunService
from main_backend.conversation.streams import RunStreams
from main_backend.conversation.threads import ThreadService
from main_backend.health import HealthChecks
from main_backend.metrics import Metrics
from main_backend.settings import Settings
from main_backend.shutdown import Shutdown
from stubichat_common.routing import auth_guard


def get_settings(request: Request) -> Settings:
    settings: Settings = request.app.state.settings
    return settings


def get_metrics(request: Request) -> Metrics:
    metrics: Metrics = request.app.state.metrics
    return metrics


def get_chat(request: Request) -> ChatService:
    chat: ChatService = request.app.state.chat
    return chat


def get_streams(request: Request) -> RunStreams:
    streams: RunStreams = request.app.state.streams
    return streams


def get_threads(request: Request) -> ThreadService:
    threads: ThreadService = request.app.state.threads
    return threads


def get_runs(request: Request) -> RunService:
    runs: RunService = request.app.state.runs
    return runs


def get_admin(request: Request) -> AdminService:
    admin: AdminService = request.app.state.admin
    return admin


def get_health(request: Request) -> HealthChecks:
    health: HealthChecks = request.app.state.health
    return health


def get_shutdown(request: Request) -> Shutdown:
    shutdown: Shutdown = request.app.state.shutdown
    return shutdown


def get_request_id(request: Request) -> str | None:
    return getattr(request.state, "request_id", None)


@auth_guard
def current_user(request: Request) -> str:
    settings = get_settings(request)
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
    check_admin(request.headers.get("authorization"), get_settings(request).admin_token)


SettingsDep = Annotated[Settings, Depends(get_settings)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]
ChatDep = Annotated[ChatService, Depends(get_chat)]
StreamsDep = Annotated[RunStreams, Depends(get_streams)]
ThreadsDep = Annotated[ThreadService, Depends(get_threads)]
RunsDep = Annotated[RunService, Depends(get_runs)]
AdminDep = Annotated[AdminService, Depends(get_admin)]
HealthDep = Annotated[HealthChecks, Depends(get_health)]
ShutdownDep = Annotated[Shutdown, Depends(get_shutdown)]
RequestIdDep = Annotated[str | None, Depends(get_request_id)]
UserDep = Annotated[str, Depends(current_user)]
