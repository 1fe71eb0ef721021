"""Where domain and LLM errors become HTTP responses: the one mapping."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import RouteContext
from loguru import logger

from main_backend.auth import AdminDisabled, Unauthorized
from main_backend.db import DATABASE_UNAVAILABLE
from main_backend.errors import (
    AssistantNotFound,
    DomainError,
    EventIdConflict,
    IdempotencyKeyReused,
    InvalidEvent,
    InvalidRequest,
    MessageNotFound,
    NoActiveRun,
    QueueFull,
    RequestInProgress,
    RunCancelledBeforeStart,
    RunNotFound,
    ShuttingDown,
    ThreadBusy,
    ThreadExists,
    ThreadNotFound,
    TooManyActiveRuns,
    VersionConflict,
)
from main_backend.llm_client import LLMError
from stubichat_common.errors import HTTP_CODES, error_response, install_common_handlers

_DOMAIN: dict[type[DomainError], tuple[int, str]] = {
    InvalidRequest: (422, "invalid_request"),
    InvalidEvent: (422, "invalid_request"),
    ThreadNotFound: (404, "thread_not_found"),
    RunNotFound: (404, "run_not_found"),
    AssistantNotFound: (404, "assistant_not_found"),
    MessageNotFound: (404, "message_not_found"),
    ThreadBusy: (409, "thread_busy"),
    ThreadExists: (409, "thread_exists"),
    VersionConflict: (409, "version_conflict"),
    EventIdConflict: (409, "version_conflict"),
    NoActiveRun: (409, "no_active_run"),
    IdempotencyKeyReused: (422, "idempotency_key_reused"),
    RequestInProgress: (409, "request_in_progress"),
    TooManyActiveRuns: (429, "too_many_active_runs"),
    QueueFull: (429, "queue_full"),
    RunCancelledBeforeStart: (409, "run_cancelled"),
    Unauthorized: (401, "unauthorized"),
    AdminDisabled: (403, "admin_disabled"),
    ShuttingDown: (503, "shutting_down"),
}

# The one table of a failed run's error codes (every `LLMError` code among them) and
# the HTTP status each answers with; an unknown code is the upstream's failure (502).
# Trying again may help after any of them unless the run's error says otherwise.
RUN_ERRORS: dict[str, int] = {
    "llm_upstream_error": 502,
    "llm_agent_unavailable": 503,
    "llm_timeout": 504,
    "llm_rate_limited": 429,
    "interrupted": 503,
    "database_unavailable": 503,
    "internal_error": 500,
}

# Every code this service answers with → its status, for the routes' OpenAPI entries.
_STATUSES: dict[str, int] = {
    **{code: status for status, code in HTTP_CODES.items()},
    **{code: status for status, code in _DOMAIN.values()},
    **RUN_ERRORS,
}


# Seconds a client is asked to wait after 503 database_unavailable: about what a
# connection attempt may take (DATABASE_CONNECT_TIMEOUT's default).
DATABASE_RETRY_AFTER_SECONDS = 5
DATABASE_UNAVAILABLE_MESSAGE = "the database is not reachable right now; try again shortly"


def run_error_status(code: str) -> int:
    return RUN_ERRORS.get(code, 502)


def error_responses(*codes: str) -> dict[int | str, dict[str, Any]]:
    """A route's `responses`: the given codes grouped under their statuses, in order."""
    grouped: dict[int, list[str]] = {}
    for code in codes:
        grouped.setdefault(_STATUSES[code], []).append(code)
    return {status: {"description": ", ".join(names)} for status, names in grouped.items()}


def domain_error_response(request: Request, exc: DomainError) -> JSONResponse:
    status, code = next(v for k, v in _DOMAIN.items() if isinstance(exc, k))
    details: list[dict[str, Any]] | None = None
    if isinstance(exc, InvalidRequest | InvalidEvent) and exc.field:
        details = [{"field": exc.field, "message": str(exc)}]
    if isinstance(exc, ShuttingDown) and exc.run_id is not None:
        details = [{"thread_id": exc.thread_id, "run_id": exc.run_id}]
    headers = {"WWW-Authenticate": "Bearer"} if status == 401 else {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    return error_response(request, status, code, str(exc), details, headers or None)


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
        status = run_error_status(exc.code)
        return error_response(request, status, exc.code, exc.message, None, headers)

    async def _database(request: Request, exc: Exception) -> JSONResponse:
        return database_unavailable_response(request, exc)

    # Unreachable, silent or locked, or no pooled connection in time (db.py names
    # them); any other database error is a 500.
    for error in DATABASE_UNAVAILABLE:
        app.add_exception_handler(error, _database)


def database_unavailable_response(request: Request, exc: BaseException) -> JSONResponse:
    logger.error("database unavailable: {}: {}", type(exc).__name__, exc)
    return error_response(
        request,
        503,
        "database_unavailable",
        DATABASE_UNAVAILABLE_MESSAGE,
        None,
        {"Retry-After": str(DATABASE_RETRY_AFTER_SECONDS)},
    )
