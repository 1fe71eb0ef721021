"""Every status a route can answer, documented in one place for both services.

Routes declare only their own errors (404 thread_not_found, 409 …). The statuses
that the shared plumbing answers are derived here from what a route is: an auth
guard means 401; a POST/PUT/PATCH means the middleware's 408 and 413; a body means
415 and 422; parameters mean 422. A service adds its own (`RouteErrors`). Every
4xx/5xx response without a schema of its own gets the error envelope's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

from fastapi import FastAPI
from fastapi.dependencies.utils import get_flat_params
from fastapi.routing import APIRoute, RouteContext, iter_route_contexts

from stubichat_common.errors import ErrorEnvelope
from stubichat_common.middleware import BODY_METHODS
from stubichat_common.routing import guards_of

RouteErrors = Callable[[RouteContext], dict[int, str]]

ENVELOPE = "ErrorEnvelope"
_FASTAPI_VALIDATION = ("HTTPValidationError", "ValidationError")


def common_errors(route: RouteContext) -> dict[int, str]:
    """status → "code: when", for what the shared plumbing may answer on `route`."""
    errors: dict[int, str] = {}
    if guards_of(route.dependant):
        errors[401] = "unauthorized: no or a wrong 'Authorization: Bearer' token"
    if set(route.methods or ()) & BODY_METHODS:
        errors[408] = "request_timeout: the body did not arrive within the deadline"
        errors[413] = "payload_too_large: the body is larger than the service accepts"
    if route.body_field is not None:
        errors[415] = "unsupported_media_type: the Content-Type is not application/json"
    if route.body_field is not None or get_flat_params(route.dependant):
        errors[422] = "invalid_request: `details` names each field at fault"
    return errors


def document_errors(
    schema: dict[str, Any], routes: list[Any], route_errors: RouteErrors | None = None
) -> None:
    """Add the statuses and the envelope schema to a generated OpenAPI `schema`."""
    components = schema.setdefault("components", {}).setdefault("schemas", {})
    envelope = ErrorEnvelope.model_json_schema(ref_template="#/components/schemas/{model}")
    components.update(envelope.pop("$defs", {}))
    components[ENVELOPE] = envelope
    reference = {"$ref": f"#/components/schemas/{ENVELOPE}"}
    for route in iter_route_contexts(routes):
        if not isinstance(route.original_route, APIRoute) or not route.include_in_schema:
            continue
        errors = common_errors(route)
        for status, description in (route_errors(route) if route_errors else {}).items():
            errors[status] = _joined(errors.get(status), description)
        for method in route.methods or ():
            responses = schema["paths"][route.path_format][method.lower()]["responses"]
            for status, description in errors.items():
                response = responses.setdefault(str(status), {"description": description})
                response["description"] = _joined(response["description"], description)
            for status, response in responses.items():
                if status[0] in "45" and _fastapi_default_or_none(response):
                    response["content"] = {"application/json": {"schema": reference}}
    text = json.dumps(schema["paths"])
    for name in _FASTAPI_VALIDATION:
        if f'/{name}"' not in text:
            components.pop(name, None)


def install_error_docs(app: FastAPI, route_errors: RouteErrors | None = None) -> None:
    """Make `app.openapi()` document every status of every route (FastAPI caches it)."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            document_errors(generate(), app.routes, route_errors)
        assert app.openapi_schema is not None
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def _joined(existing: str | None, description: str) -> str:
    """One description per status naming every code; FastAPI's default is replaced."""
    if not existing or existing == "Validation Error":
        return description
    code = description.split(":", 1)[0]
    return existing if code in existing else f"{existing}; {description}"


def _fastapi_default_or_none(response: dict[str, Any]) -> bool:
    schema = response.get("content", {}).get("application/json", {}).get("schema")
    return schema is None or schema.get("$ref", "").rsplit("/", 1)[-1] in _FASTAPI_VALIDATION
