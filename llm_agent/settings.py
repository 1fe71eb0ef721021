"""The llm_agent's settings, read from the environment (or `.env`).

Every setting here is listed in `env.example` with a one-line comment.
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator
from pydantic_settings import SettingsConfigDict

from stubichat_common.model_settings import ModelSettings

OPENAI_DEFAULT_BASE_URL = "https://api.openai.com/v1"


class Settings(ModelSettings):
    model_config = SettingsConfigDict(env_file=".env", extra="ignore")

    # Service
    debug: bool = False
    log_level: str = "INFO"
    log_json: bool = False
    max_request_bytes: int = Field(default=1_048_576, gt=0)
    # Seconds a request body may take to arrive in full (408 request_timeout after).
    request_body_timeout_seconds: float = Field(default=30.0, gt=0)
    llm_agent_token: str | None = None

    # Provider: "auto" picks openai when OPENAI_API_KEY is set, else echo.
    llm_provider: Literal["auto", "openai", "echo"] = "auto"
    openai_api_key: str | None = None
    openai_base_url: str | None = None
    openai_organization: str | None = None
    openai_connect_timeout: float = Field(default=10.0, gt=0)
    # Longest silence tolerated while waiting for the upstream's next bytes:
    # a stalled stream ends with an error after this many seconds.
    openai_read_timeout: float = Field(default=60.0, gt=0)
    # Connections to the upstream: each streamed answer holds one until it ends, so
    # this bounds the agent's concurrent generations (the SDK's own default is 1000).
    openai_max_connections: int = Field(default=2000, ge=1)
    # Pause between the echo provider's streamed words, to watch streaming work.
    echo_word_delay: float = Field(default=0.0, ge=0, le=5)

    # Model parameters (default_model, allowed_models, temperature, max_tokens: ModelSettings)
    max_messages: int = Field(default=10_000, gt=0)
    max_content_chars: int = Field(default=200_000, gt=0)

    # Retries of the upstream call: total attempts include the first one.
    retry_max_attempts: int = Field(default=4, ge=1, le=10)
    retry_base_delay: float = Field(default=0.5, ge=0)
    retry_max_delay: float = Field(default=8.0, ge=0)
    # A Retry-After longer than this is not waited out: the caller gets the 429.
    retry_after_max: float = Field(default=30.0, ge=0)

    @field_validator(
        "openai_api_key", "openai_base_url", "openai_organization", "llm_agent_token", mode="before"
    )
    @classmethod
    def _blank_is_unset(cls, value: object) -> object:
        return None if isinstance(value, str) and not value.strip() else value

    @model_validator(mode="after")
    def _check(self) -> Settings:
        if not self.allowed_models:
            raise ValueError("ALLOWED_MODELS must name at least one model (or '*' for any)")
        if not self.any_model_allowed and self.default_model not in self.allowed_models:
            raise ValueError(
                f"DEFAULT_MODEL {self.default_model!r} is not in ALLOWED_MODELS "
                f"({', '.join(self.allowed_models)})"
            )
        if self.retry_max_delay < self.retry_base_delay:
            raise ValueError("RETRY_MAX_DELAY must not be smaller than RETRY_BASE_DELAY")
        return self

    def startup_problems(self) -> list[str]:
        """What makes this configuration unfit to serve (checked by the entry point)."""
        if (
            self.provider_name == "openai"
            and not self.openai_api_key
            and self.effective_base_url.rstrip("/") == OPENAI_DEFAULT_BASE_URL
        ):
            return [
                "LLM_PROVIDER=openai against OpenAI's own endpoint needs OPENAI_API_KEY "
                "(set OPENAI_BASE_URL for a local OpenAI-compatible server)"
            ]
        return []

    @property
    def provider_name(self) -> Literal["openai", "echo"]:
        if self.llm_provider == "auto":
            return "openai" if self.openai_api_key else "echo"
        return self.llm_provider

    @property
    def effective_base_url(self) -> str:
        return self.openai_base_url or OPENAI_DEFAULT_BASE_URL
