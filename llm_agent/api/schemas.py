"""Request and response bodies of the llm_agent HTTP API."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

Role = Literal["system", "user", "assistant"]


class _Strict(BaseModel):
    # Unknown fields and type coercions ("0.7" for 0.7) are client mistakes
    # worth naming, not guessing around.
    model_config = ConfigDict(extra="forbid", strict=True)


class ChatMessageIn(_Strict):
    role: Role
    content: str = Field(min_length=1)

    @field_validator("content")
    @classmethod
    def _no_nul(cls, value: str) -> str:
        if "\x00" in value:
            raise ValueError("content must not contain NUL bytes")
        return value


class GenerateRequest(_Strict):
    messages: list[ChatMessageIn] = Field(min_length=1)
    model: str | None = Field(default=None, min_length=1, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    stop: str | list[str] | None = None
    user: str | None = Field(default=None, max_length=256)

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes at most 4 non-empty strings")
        return value


class UsageOut(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class GenerateResponse(BaseModel):
    content: str
    model: str
    finish_reason: str | None
    usage: UsageOut | None
    latency_ms: float
    provider: str


class ModelsResponse(BaseModel):
    default: str
    models: list[str]


class ServiceInfo(BaseModel):
    service: Literal["llm-agent"] = "llm-agent"
    version: str
    provider: str
    default_model: str


class HealthResponse(BaseModel):
    status: Literal["ok", "degraded"]
    provider: str
    checks: dict[str, dict[str, object]]
