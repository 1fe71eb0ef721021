"""The llm_agent application factory and its lifespan."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from loguru import logger

from llm_agent import __version__
from llm_agent.api import api_router
from llm_agent.api.errors import install_error_handlers, route_errors
from llm_agent.errors import AgentError
from llm_agent.generation import Generator
from llm_agent.metrics import Metrics
from llm_agent.providers import build_provider
from llm_agent.settings import Settings
from stubichat_common.app import service_app
from stubichat_common.logging import setup_logging


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    setup_logging(settings.log_level, settings.log_json)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        def count_retry(error: AgentError) -> None:
            metrics.upstream_retries.labels(error.code).inc()

        provider = build_provider(settings, on_retry=count_retry)
        app.state.generator = Generator(provider, metrics)
        health = provider.health()
        logger.info(
            "llm-agent {} ready: provider={} default_model={} {}",
            __version__,
            provider.name,
            settings.default_model,
            health.detail,
        )
        if not health.usable:
            logger.error("the {} provider is not usable: {}", provider.name, health.detail)
        try:
            yield
        finally:
            await provider.aclose()

    app = service_app(
        title="Stubichat LLM agent",
        version=__version__,
        lifespan=lifespan,
        settings=settings,
        metrics=metrics,
        route_errors=route_errors,
    )
    install_error_handlers(app)
    app.include_router(api_router)
    return app
