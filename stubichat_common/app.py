"""The FastAPI app both services start from: docs only in debug (documenting every
status of every route), the request context middleware, and the metrics the
middleware feeds."""

from __future__ import annotations

from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

from fastapi import FastAPI

from stubichat_common.metrics import ServiceMetrics
from stubichat_common.middleware import RequestContextMiddleware
from stubichat_common.openapi import RouteErrors, install_error_docs


def service_app(
    *,
    title: str,
    version: str,
    lifespan: Callable[[FastAPI], AbstractAsyncContextManager[None]],
    settings: Any,
    metrics: ServiceMetrics,
    route_errors: RouteErrors | None = None,
) -> FastAPI:
    """`settings` needs `debug`, `max_request_bytes` and `request_body_timeout_seconds`;
    it is kept on `app.state`. `route_errors` names the service's own errors that its
    routes do not declare one by one (see `stubichat_common.openapi`)."""
    app = FastAPI(
        title=title,
        version=version,
        lifespan=lifespan,
        docs_url="/docs" if settings.debug else None,
        redoc_url=None,
        openapi_url="/openapi.json" if settings.debug else None,
    )
    install_error_docs(app, route_errors)
    app.state.settings = settings
    app.state.metrics = metrics
    app.add_middleware(
        RequestContextMiddleware,
        request_duration=metrics.request_duration,
        errors=metrics.errors,
        max_body_bytes=settings.max_request_bytes,
        body_timeout_seconds=settings.request_body_timeout_seconds,
    )
    return app
