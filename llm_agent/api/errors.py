"""Where the agent's errors become HTTP responses (the envelope itself is shared)."""

from __future__ import annotations

from collections.abc import Iterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from fastapi.routing import RouteContext

from llm_agent.errors import AgentError
from stubichat_common.errors import error_response, install_common_handlers


def agent_error_response(request: Request, exc: AgentError) -> JSONResponse:
    headers = {}
    if exc.retry_after is not None:
        headers["Retry-After"] = str(max(1, round(exc.retry_after)))
    if exc.status_code == 401:
        headers["WWW-Authenticate"] = "Bearer"
    return error_response(
        request, exc.status_code, exc.code, exc.message, exc.details, headers or None
    )


def _agent_errors(base: type[AgentError] = AgentError) -> Iterator[type[AgentError]]:
    for error in base.__subclasses__():
        yield error
        yield from _agent_errors(error)


def route_errors(route: RouteContext) -> dict[int, str]:
    """For the OpenAPI schema: a generation route may answer any of the agent's errors."""
    if "generate" not in route.tags:
        return {}
    codes: dict[int, list[str]] = {}
    for error in _agent_errors():
        codes.setdefault(error.status_code, []).append(error.code)
    return {status: ", ".join(names) for status, names in sorted(codes.items())}


def install_error_handlers(app: FastAPI) -> None:
    install_common_handlers(app)

    @app.exception_handler(AgentError)
    async def _agent_error(request: Request, exc: AgentError) -> JSONResponse:
        return agent_error_response(request, exc)
