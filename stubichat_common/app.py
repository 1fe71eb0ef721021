"""The FastAPI app both services start from: docs only in debug, the request
context middleware, and the metrics the middleware feeds."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI

from stubichat_common.metrics import ServiceMetrics
from stubichat_common.middleware import RequestContextMiddleware


def service_app(
    *,
    title: str,
    version: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    settings: Any,
    metrics: ServiceMetrics,
) -> FastAPI:
    """`settings` needs `debug`, `max_request_bytes` and `request_body_timeout_seconds`;
    it is kept on `app.state`."""
    app = FastAPI(
        title=title, version=version, lifespan=lifespan,
        docs_url="/docs" if settings.debug else None, redoc_url=None,
        openapi_url="/openapi.json" if settings.debug else None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    app.add_middleware(
        RequestContextMiddleware, request_duration=metrics.request_duration,
        errors=metrics.errors, max_body_bytes=settings.max_request_bytes,
        body_timeout_seconds=settings.request_body_timeout_seconds,
    )
    return app
