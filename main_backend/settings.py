"""The main backend's settings, read from the environment (or `.env`).

Every setting here is listed in `env.example` with a one-line comment.
"""

from __future__ import annotations

import re
import socket
import uuid
from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from main_backend.db import normalize_database_url
from stubichat_common.model_settings import ModelSettings, split_list

DEFAULT_DATABASE_URL = "sqlite:///./data/stubichat.db"
MIN_SECRET_KEY_LENGTH = 32
_ORIGIN = re.compile(r"^https?://[A-Za-z0-9.\-]+(:\d{1,5})?$")


def _default_replica_id() -> str:
    return f"{socket.gethostname()}-{uuid.uuid4().hex[:8]}"


class Settings(ModelSettings):
    """Model parameters (DEFAULT_MODEL, ALLOWED_MODELS, …) come from ModelSettings."""

    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    debug: bool = False
    log_level: str = "INFO"
    log_json: bool = False

    # sqlite:///path (embedded default) or postgresql://user@host:5432/db (also
    # postgres://…, and explicit driver forms such as postgresql+psycopg://…).
    database_url: str = DEFAULT_DATABASE_URL
    # Pooled connections per process (Postgres) and seconds to wait for one.
    database_pool_size: int = Field(default=10, ge=1, le=200)
    database_pool_timeout: float = Field(default=30.0, gt=0)
    # Postgres: seconds to establish a connection (whole seconds, libpq's minimum is 2).
    database_connect_timeout: int = Field(default=5, ge=2, le=600)
    # Postgres: longest statement (server-side statement_timeout); a server silent
    # a second longer loses its connection. Normal statements take milliseconds.
    database_statement_timeout: float = Field(default=10.0, gt=0, le=3600)
    # How long an SQLite writer waits for the write lock before giving up (ms).
    sqlite_busy_timeout_ms: int = Field(default=30_000, ge=0)

    # HTTP
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    max_request_bytes: int = Field(default=1_048_576, gt=0)
    # Seconds a request body may take to arrive in full (408 request_timeout after).
    request_body_timeout_seconds: float = Field(default=30.0, gt=0)
    # Limits of one chat request (the agent's MAX_MESSAGES bounds whole prompts).
    max_input_messages: int = Field(default=200, gt=0)
    max_message_chars: int = Field(default=100_000, gt=0)
    auth_mode: Literal["none", "jwt"] = "none"
    secret_key: str | None = None
    # Optional JWT claims to require (AUTH_MODE=jwt).
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    # Bearer token of the /admin API; unset = the admin API answers 403 admin_disabled.
    admin_token: str | None = None

    # The LLM agent
    llm_agent_url: str = "http://127.0.0.1:8001"
    llm_agent_timeout: float = Field(default=120.0, gt=0)
    llm_agent_token: str | None = None
    # Connections to the agent per process: each streamed answer holds one, so this
    # bounds the process's concurrent generations (keep it at least the runs one
    # replica should carry at once).
    llm_agent_max_connections: int = Field(default=200, ge=1)
    # Seconds a turn waits for a free connection when all are busy before it fails
    # as 503 llm_agent_unavailable (the wait is not part of LLM_AGENT_TIMEOUT).
    llm_agent_pool_timeout: float = Field(default=5.0, gt=0)

    # Prompt
    system_prompt: str | None = None
    max_context_tokens: int = Field(default=8000, gt=0)

    # Runs
    # A run whose replica stopped renewing its lease this long ago is resumed elsewhere.
    run_lease_seconds: float = Field(default=30.0, gt=0)
    # How often a replica renews its leases and looks for cancel requests.
    run_poll_seconds: float = Field(default=0.5, gt=0)
    # Resumes of one run after crashes before it is closed as interrupted.
    run_max_resumes: int = Field(default=2, ge=0)
    # Runs one user may have in flight at once, over all their threads and all
    # replicas (counted in the database); the next one is 429 too_many_active_runs.
    max_active_runs_per_user: int = Field(default=8, ge=1)
    idempotency_ttl_hours: float = Field(default=24.0, ge=24.0)
    sse_ping_seconds: float = Field(default=15.0, gt=0)
    # How often a client joined to a run's stream (GET /threads/{id}/runs/{run_id}/stream)
    # reads the run's saved progress: the most it lags behind the replica driving the run.
    stream_poll_seconds: float = Field(default=0.25, gt=0)
    # On SIGTERM, how long runs in flight may take to finish before they and their open
    # streams are handed over to other replicas (main_backend/shutdown.py).
    shutdown_grace_seconds: float = Field(default=20.0, ge=0)
    # Names this process in run leases (unique per process by default).
    replica_id: str = Field(default_factory=lambda: _default_replica_id(), max_length=128)

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        return split_list(value)

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(
                    f"{origin!r} is not an origin like https://app.example.com "
                    "(scheme and host, optional port, no path)"
                )
        return origins

    def startup_problems(self) -> list[str]:
        """Everything is checked by the validators; nothing more at start-up."""
        return []

    @field_validator(
        "system_prompt",
        "secret_key",
        "llm_agent_token",
        "jwt_audience",
        "jwt_issuer",
        "admin_token",
        mode="before",
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check_auth(self) -> Settings:
        if self.auth_mode == "jwt" and len(self.secret_key or "") < MIN_SECRET_KEY_LENGTH:
            raise ValueError(
                f"AUTH_MODE=jwt needs a SECRET_KEY of at least {MIN_SECRET_KEY_LENGTH} characters"
            )
        return self

    @field_validator("replica_id", mode="before")
    @classmethod
    def _blank_replica_id(cls, value: object) -> object:
        return _default_replica_id() if isinstance(value, str) and not value.strip() else value

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        normalize_database_url(value)  # raises a ValueError naming the problem
        return value
