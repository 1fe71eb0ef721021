"""The main backend's application factory and its lifespan (the one bootstrap)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from alembic.config import Config
from alembic.script import ScriptDirectory
from fastapi import FastAPI
from fastapi.middleware.cors import CORSMiddleware
from loguru import logger

from main_backend import __version__
from main_backend.api import api_router
from main_backend.api.errors import install_error_handlers, route_errors
from main_backend.auth import LOCAL_USER
from main_backend.conversation.admin import AdminService
from main_backend.conversation.chat import ChatService
from main_backend.conversation.checkpoints import open_checkpointer
from main_backend.conversation.graph import TurnDeps, build_turn_graph
from main_backend.conversation.idempotency import IdempotencyKeys
from main_backend.conversation.leases import RunLeases
from main_backend.conversation.progress import RunProgress
from main_backend.conversation.runner import TurnRunner
from main_backend.conversation.runs import RunService
from main_backend.conversation.streams import RunStreams
from main_backend.conversation.threads import ThreadService
from main_backend.db import create_database
from main_backend.events.store import EventStore
from main_backend.health import HealthChecks
from main_backend.llm_client import LLMAgentClient
from main_backend.metrics import Metrics
from main_backend.pg_connection import DatabaseTimeouts
from main_backend.settings import Settings
from main_backend.shutdown import Shutdown
from stubichat_common.app import service_app
from stubichat_common.logging import setup_logging

ALEMBIC_INI = Path(__file__).resolve().parent.parent / "alembic.ini"


def migration_head() -> str | None:
    return ScriptDirectory.from_config(Config(str(ALEMBIC_INI))).get_current_head()


def create_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings()
    setup_logging(settings.log_level, settings.log_json)
    metrics = Metrics()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        timeouts = DatabaseTimeouts(
            settings.database_connect_timeout, settings.database_statement_timeout
        )
        db = create_database(
            settings.database_url,
            pool_size=settings.database_pool_size,
            pool_timeout=settings.database_pool_timeout,
            sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
            timeouts=timeouts,
        )
        llm = LLMAgentClient(
            settings.llm_agent_url,
            settings.llm_agent_timeout,
            settings.llm_agent_token,
            max_connections=settings.llm_agent_max_connections,
            pool_timeout=settings.llm_agent_pool_timeout,
        )
        store = EventStore(
            db, on_append=metrics.event_appends.inc, on_conflict=metrics.version_conflicts.inc
        )
        leases = RunLeases(
            db, settings.replica_id, settings.run_lease_seconds, settings.max_active_runs_per_user
        )
        progress = RunProgress(db)
        try:
            async with open_checkpointer(
                settings.database_url,
                sqlite_busy_timeout_ms=settings.sqlite_busy_timeout_ms,
                timeouts=timeouts,
            ) as checkpointer:
                graph = build_turn_graph(
                    TurnDeps(
                        store, llm, settings.system_prompt, settings.max_context_tokens, progress
                    ),
                    checkpointer,
                )
                runner = TurnRunner(
                    graph,
                    checkpointer,
                    store,
                    leases,
                    poll_seconds=settings.run_poll_seconds,
                    sweep_seconds=max(0.2, settings.run_lease_seconds / 2),
                    max_resumes=settings.run_max_resumes,
                    on_end=metrics.run_ended,
                )
                # What the routes get (api/deps.py): the services, nothing below them.
                app.state.health = health = HealthChecks(db, llm, app.state.migration_head)
                app.state.threads = ThreadService(store)
                app.state.runs = RunService(store)
                keys = IdempotencyKeys(db, settings.idempotency_ttl_hours)
                app.state.chat = chat = ChatService(store, runner, keys, progress)
                app.state.streams = RunStreams(store, progress, settings.stream_poll_seconds)
                app.state.admin = AdminService(store, llm, settings)
                # SIGTERM drains before the server waits for connections (shutdown.py).
                app.state.shutdown = shutdown = Shutdown(
                    settings.shutdown_grace_seconds,
                    runner.stop,
                    # A joined stream sees a run's end at its next read of the log.
                    linger_seconds=settings.stream_poll_seconds + 0.5,
                )
                unhook_signals = shutdown.hook_signals()
                runner.start_background()
                purging = asyncio.create_task(keys.purge_periodically(), name="key purge")
                if settings.auth_mode == "none":
                    logger.warning(
                        "AUTH_MODE=none: every request acts as user '{}'; use "
                        "AUTH_MODE=jwt outside development",
                        LOCAL_USER,
                    )
                logger.info(
                    "main-backend {} ready: database={} llm_agent={} replica={}",
                    __version__,
                    db.dialect,
                    settings.llm_agent_url,
                    settings.replica_id,
                )
                try:
                    yield
                finally:
                    unhook_signals()
                    purging.cancel()
                    await health.close()
                    # Cancels asked by clients that left go through before the runs stop.
                    await chat.close()
                    # Done already after a signal; else the runs get their grace now.
                    await shutdown.drain()
        finally:
            await llm.aclose()
            await db.dispose()

    app = service_app(
        title="Stubichat main backend",
        version=__version__,
        lifespan=lifespan,
        settings=settings,
        metrics=metrics,
        route_errors=route_errors,
    )
    app.state.migration_head = migration_head()
    install_error_handlers(app)
    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=settings.cors_origins,
            allow_methods=["*"],
            allow_headers=["*"],
            expose_headers=["X-Request-ID"],
            allow_credentials="*" not in settings.cors_origins,
        )
    app.include_router(api_router)
    return app
