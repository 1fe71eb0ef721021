"""Where domain and LLM errors become HTTP responses: the one mapping."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import RouteContext
from loguru import logger
from sqlalchemy.exc import InterfaceError, OperationalError

from main_backend.auth import AdminDisabled, Unauthorized
from main_backend.errors import (
    DomainError,
    EventIdConflict,
    IdempotencyKeyReused,
    InvalidEvent,
    InvalidRequest,
    NoActiveRun,
    RequestInProgress,
    ThreadBusy,
    ThreadNotFound,
    VersionConflict,
)
from main_backend.llm_client import LLMError
from stubichat_common.errors import error_response, install_common_handlers

_DOMAIN: dict[type[DomainError], tuple[int, str]] = {
    InvalidRequest: (422, "invalid_request"),
    InvalidEvent: (422, "invalid_request"),
    ThreadNotFound: (404, "thread_not_found"),
    ThreadBusy: (409, "thread_busy"),
    VersionConflict: (409, "version_conflict"),
    EventIdConflict: (409, "version_conflict"),
    NoActiveRun: (409, "no_active_run"),
    IdempotencyKeyReused: (422, "idempotency_key_reused"),
    RequestInProgress: (409, "request_in_progress"),
    Unauthorized: (401, "unauthorized"),
    AdminDisabled: (403, "admin_disabled"),
}

# A failed run's error code → (HTTP status, whether trying again may help).
RUN_ERRORS: dict[str, tuple[int, bool]] = {
    "llm_upstream_error": (502, True),
    "llm_agent_unavailable": (503, True),
    "llm_timeout": (504, True),
    "llm_rate_limited": (429, True),
    "interrupted": (503, True),
    "internal_error": (500, True),
}


def run_error_status(code: str) -> tuple[int, bool]:
    return RUN_ERRORS.get(code, (502, True))


def domain_error_response(request: Request, exc: DomainError) -> JSONResponse:
    status, code = next(v for k, v in _DOMAIN.items() if isinstance(exc, k))
    details: list[dict[str, Any]] | None = None
    if isinstance(exc, InvalidRequest) and exc.field:
        details = [{"field": exc.field, "message": str(exc)}]
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
    return error_response(request, status, code, str(exc), details, headers)


def route_errors(route: RouteContext) -> dict[int, str]:
    """For the OpenAPI schema: every route but the service ones reads the database."""
    if "service" in route.tags:
        return {}
    return {503: "database_unavailable: the database did not answer; try again shortly"}


def install_error_handlers(app: FastAPI) -> None:
    install_common_handlers(app)

    @app.exception_handler(DomainError)
    async def _domain(request: Request, exc: DomainError) -> JSONResponse:
        return domain_error_response(request, exc)

    @app.exception_handler(LLMError)
    async def _llm(request: Request, exc: LLMError) -> JSONResponse:
        headers = {"Retry-After": str(round(exc.retry_after))} if exc.retry_after else None
        return error_response(request, exc.status_code, exc.code, exc.message, None, headers)

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        logger.error("database unavailable: {}", exc)
        return error_response(request, 503, "database_unavailable",
                              "the database is not reachable right now; try again shortly")

    # Connection-level failures only; any other database error is a 500.
    app.add_exception_handler(OperationalError, _database)
    app.add_exception_handler(InterfaceError, _database)
