"""Per-request plumbing as plain ASGI (safe for streaming responses).

Request id in and out, a body-size limit and a body-read deadline, the access log
line, the latency histogram, and a last-resort 500 envelope that never leaks a
stack trace.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import uuid
from typing import Any

from loguru import logger
from prometheus_client import Histogram
from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stubichat_common.errors import HTTP_CODES, ErrorCounter, error_body

_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
BODY_METHODS = {"POST", "PUT", "PATCH"}


class _BodyRefused(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def incoming_request_id(scope: Scope) -> str | None:
    for name, value in scope.get("headers", ()):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            return candidate if _VALID_REQUEST_ID.match(candidate) else None
    return None


class RequestContextMiddleware:
    def __init__(
        self,
        app: ASGIApp,
        *,
        request_duration: Histogram,
        errors: ErrorCounter,
        max_body_bytes: int,
        body_timeout_seconds: float,
    ) -> None:
        self.app = app
        self.request_duration = request_duration
        self.errors = errors
        self.max_body_bytes = max_body_bytes
        self.body_timeout_seconds = body_timeout_seconds

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = incoming_request_id(scope) or uuid.uuid4().hex
        scope.setdefault("state", {})["request_id"] = request_id
        started_at = time.perf_counter()
        response_started = False
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal response_started, status
            if message["type"] == "http.response.start":
                response_started = True
                status = message["status"]
                MutableHeaders(scope=message)["X-Request-ID"] = request_id
            await send(message)

        with logger.contextualize(request_id=request_id):
            try:
                try:
                    replay = await self._read_body(scope, receive)
                except _BodyRefused as refused:
                    # The rest of the body is never read: the connection cannot be reused.
                    await self._send_error(
                        send_with_id,
                        request_id,
                        refused.status,
                        HTTP_CODES[refused.status],
                        refused.message,
                        close=True,
                    )
                else:
                    await self.app(scope, replay, send_with_id)
            except Exception:
                logger.exception("unhandled error while serving the request")
                if response_started:
                    raise
                await self._send_error(
                    send_with_id,
                    request_id,
                    500,
                    "internal_error",
                    "an unexpected error occurred; see the service logs",
                )
            finally:
                elapsed = time.perf_counter() - started_at
                route = scope.get("route")
                template = getattr(route, "path", None) or "unmatched"
                self.request_duration.labels(scope["method"], template, status).observe(elapsed)
                latency_ms = round(elapsed * 1000, 1)
                logger.bind(
                    method=scope["method"], path=scope["path"], status=status, latency_ms=latency_ms
                ).info("{} {} {} {}ms", scope["method"], scope["path"], status, latency_ms)

    async def _read_body(self, scope: Scope, receive: Receive) -> Receive:
        """Buffer the body within the size limit and the deadline, and hand the app a
        receive that replays it; raise `_BodyRefused` (413, 408) otherwise."""
        if scope["method"] not in BODY_METHODS:
            return receive
        too_large = _BodyRefused(413, f"the request body exceeds {self.max_body_bytes} bytes")
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body_bytes:
                raise too_large
        chunks: list[bytes] = []
        size = 0
        more = True
        try:
            # One deadline for the whole body: a client sending a byte now and then
            # would never trip a per-read timeout.
            async with asyncio.timeout(self.body_timeout_seconds):
                while more:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        return receive
                    chunk = message.get("body", b"")
                    size += len(chunk)
                    if size > self.max_body_bytes:
                        raise too_large
                    chunks.append(chunk)
                    more = message.get("more_body", False)
        except TimeoutError:
            raise _BodyRefused(
                408, f"the request body did not arrive within {self.body_timeout_seconds:g} seconds"
            ) from None
        body = b"".join(chunks)
        delivered = False

        async def replay() -> Message:
            nonlocal delivered
            if not delivered:
                delivered = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        return replay

    async def _send_error(
        self,
        send: Send,
        request_id: str,
        status: int,
        code: str,
        message: str,
        close: bool = False,
    ) -> None:
        self.errors.labels(code).inc()
        payload: dict[str, Any] = error_body(code, message, request_id)
        body = json.dumps(payload).encode()
        headers = [
            (b"content-type", b"application/json"),
            (b"content-length", str(len(body)).encode()),
        ]
        if close:
            headers.append((b"connection", b"close"))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
