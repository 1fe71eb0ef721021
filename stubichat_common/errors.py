"""The error envelope both services answer with, and the handlers they share."""

from __future__ import annotations

from typing import Any, Protocol

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from fastapi.routing import iter_route_contexts
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.routing import Match

# The one table of the codes the shared plumbing answers with (HTTP-level errors that
# no route raises itself); the services' own codes live in their error mappings.
HTTP_CODES: dict[int, str] = {
    401: "unauthorized",
    404: "not_found",
    405: "method_not_allowed",
    408: "request_timeout",
    413: "payload_too_large",
    415: "unsupported_media_type",
}


class ErrorInfo(BaseModel):
    code: str = Field(description="stable machine-readable code, e.g. `invalid_request`")
    message: str = Field(description="a sentence for humans")
    request_id: str | None = Field(description="the X-Request-ID of this request")
    details: list[dict[str, Any]] | None = Field(
        default=None, description="per-field problems (`field`, `message`), or run details"
    )


class ErrorEnvelope(BaseModel):
    """Every error answer of both services."""

    error: ErrorInfo


class ErrorCounter(Protocol):
    def labels(self, code: str) -> Any: ...


class RequestBodyError(Exception):
    """A body refused before it is parsed into the route's model (media type, encoding,
    JSON syntax); `code` is `HTTP_CODES[status]` unless given."""

    def __init__(self, status: int, message: str, code: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code or HTTP_CODES[status]
        self.message = message


def error_body(
    code: str, message: str, request_id: str | None, details: list[dict[str, Any]] | None = None
) -> dict[str, Any]:
    error: dict[str, Any] = {"code": code, "message": message, "request_id": request_id}
    if details:
        error["details"] = details
    return {"error": error}


def error_response(
    request: Request,
    status: int,
    code: str,
    message: str,
    details: list[dict[str, Any]] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    """The envelope for this request; counted in the app's `metrics.errors` by code."""
    request.app.state.metrics.errors.labels(code).inc()
    request_id = getattr(request.state, "request_id", None)
    body = error_body(code, message, request_id, details)
    if getattr(request.state, DETAIL_FLAG, False):
        body["detail"] = message
    return JSONResponse(body, status_code=status, headers=headers)


# Set on a request (`request.state`) whose clients read FastAPI's `{"detail": ...}`
# convention (the LangGraph SDKs): its errors carry `detail` beside the envelope.
DETAIL_FLAG = "error_detail"


def validation_details(exc: RequestValidationError) -> list[dict[str, Any]]:
    details = []
    for error in exc.errors():
        location = [str(part) for part in error.get("loc", ()) if part != "body"]
        # A check of a nested value (metadata) names where in it the problem is.
        location += [str(part) for part in (error.get("ctx") or {}).get("path", ())]
        if error.get("type") == "json_invalid":
            location = []  # FastAPI puts the character offset there; it is not a field
        details.append(
            {
                "field": ".".join(location) or "body",
                "message": error.get("msg", "invalid value"),
                "type": error.get("type", "value_error"),
            }
        )
    return details


def allowed_methods(request: Request) -> str:
    """Every method of every route at the request's path (Starlette names only those of
    the first route that matches it)."""
    methods: set[str] = set()
    for route in iter_route_contexts(request.app.routes):
        match, _ = route.matches(request.scope)
        if match != Match.NONE and route.methods:
            methods |= route.methods
    return ", ".join(sorted(methods))


def install_common_handlers(app: FastAPI, validation_code: str = "invalid_request") -> None:
    """Request validation (422), refused bodies, and routing errors (404, 405) as envelopes."""

    @app.exception_handler(RequestValidationError)
    async def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
        details = validation_details(exc)
        if any(d["type"] == "json_invalid" for d in details):
            message = "the request body is not valid JSON"
        elif any(d["field"] == "body" for d in details):
            message = "the request body must be a JSON object"
        else:
            message = "invalid value for " + ", ".join(d["field"] for d in details)
        return error_response(request, 422, validation_code, message, details)

    @app.exception_handler(RequestBodyError)
    async def _body_error(request: Request, exc: RequestBodyError) -> JSONResponse:
        details = [{"field": "body", "message": exc.message}] if exc.status == 422 else None
        return error_response(request, exc.status, exc.code, exc.message, details)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        code = HTTP_CODES.get(exc.status_code, "http_error")
        headers = dict(exc.headers) if exc.headers else {}
        if exc.status_code == 405:
            headers["Allow"] = allowed_methods(request) or headers.get("Allow", "")
        return error_response(
            request, exc.status_code, code, str(exc.detail), None, headers or None
        )
