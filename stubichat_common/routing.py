"""The route class both services use: who is asking comes before what the body says.

FastAPI reads and decodes a JSON body before it runs any dependency, so a stranger
sending a broken body would learn about the body (400/422) instead of being refused
(401). `JSONRoute` judges the raw body itself first: its media type (415), its
encoding and JSON syntax (422). When the body is refused, the route's auth guards
(dependencies marked with `auth_guard`) run first and their refusal wins. A body that
passes is parsed once: FastAPI reuses the request's cached JSON.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute
from starlette.requests import Request
from starlette.responses import Response

from stubichat_common.errors import RequestBodyError

Guard = Callable[[Request], object]
G = TypeVar("G", bound=Guard)

_GUARDS: set[Guard] = set()


def auth_guard(check: G) -> G:
    """Mark a dependency as an auth check. It takes the request only and raises the
    service's 401 (or 403) error; `JSONRoute` may run it before the body is parsed."""
    _GUARDS.add(check)
    return check


def guards_of(dependant: Dependant) -> list[Guard]:
    """The auth guards among a route's dependencies (router-level ones included)."""

    def walk(node: Dependant) -> Iterator[Guard]:
        for sub in node.dependencies:
            if sub.call in _GUARDS:
                yield sub.call
            yield from walk(sub)

    return list(dict.fromkeys(walk(dependant)))


def is_json_media_type(content_type: str) -> bool:
    media_type = content_type.partition(";")[0].strip().lower()
    main, _, sub = media_type.partition("/")
    return main == "application" and (sub == "json" or sub.endswith("+json"))


async def check_json_body(request: Request) -> None:
    """Raise `RequestBodyError` unless the body is empty or a JSON text in UTF-8 sent as
    `application/json`; leaves the parsed value cached on the request."""
    body = await request.body()
    if not body:
        return  # the route's model says whether a body is required
    content_type = request.headers.get("content-type")
    if not content_type or not is_json_media_type(content_type):
        # FastAPI (strict_content_type) does not parse a body it is not told is JSON;
        # an absent header is refused too, naming what to send.
        given = f"'{content_type}'" if content_type else "missing"
        raise RequestBodyError(
            415, f"the Content-Type header must be 'application/json' (it is {given})"
        )
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestBodyError(
            422, f"the request body is not valid UTF-8 (at byte {exc.start})", "invalid_request"
        ) from exc
    try:
        await request.json()
    except json.JSONDecodeError as exc:
        raise RequestBodyError(
            422,
            f"the request body is not valid JSON: {exc.msg} at line {exc.lineno} "
            f"column {exc.colno} (character {exc.pos})",
            "invalid_request",
        ) from exc
    except RecursionError as exc:
        raise RequestBodyError(
            422, "the request body is not valid JSON: it is nested too deeply", "invalid_request"
        ) from exc


class JSONRoute(APIRoute):
    """An `APIRoute` that refuses a bad body only after the route's auth guards pass."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:
            return handler
        guards = guards_of(self.dependant)

        async def checked(request: Request) -> Response:
            try:
                await check_json_body(request)
            except RequestBodyError:
                for guard in guards:
                    guard(request)
                raise
            return await handler(request)

        return checked
