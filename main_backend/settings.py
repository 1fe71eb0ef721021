"""The main backend's settings, read from the environment (or `.env`).

Every setting here is listed in `env.example` with a one-line comment.
"""

from __future__ import annotations

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from main_backend.db import normalize_database_url

DEFAULT_DATABASE_URL = "sqlite:///./data/stubichat.db"


class Settings(BaseSettings):
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
    # How long an SQLite writer waits for the write lock before giving up (ms).
    sqlite_busy_timeout_ms: int = Field(default=30_000, ge=0)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        normalize_database_url(value)  # raises a ValueError naming the problem
        return value
