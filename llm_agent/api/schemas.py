"""Request and response bodies of the llm_agent HTTP API."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from stubichat_common.text import checked_text

Role = Literal["system", "user", "assistant"]
# Every string the agent forwards upstream: no NUL, no lone surrogate.
Text = Annotated[str, AfterValidator(checked_text)]


class _Strict(BaseModel):
    # Unknown fields and type coercions ("0.7" for 0.7) are client mistakes
    # worth naming, not guessing around.
    model_config = ConfigDict(extra="forbid", strict=True)


class ChatMessageIn(_Strict):
    role: Role
    content: Text = Field(min_length=1)


class GenerateRequest(_Strict):
    messages: list[ChatMessageIn] = Field(min_length=1)
    model: Text | None = Field(default=None, min_length=1, max_length=200)
    temperature: float | None = Field(default=None, ge=0, le=2)
    max_tokens: int | None = Field(default=None, ge=1)
    top_p: float | None = Field(default=None, ge=0, le=1)
    # Checked as a whole below: a union would report a problem at `stop.str`.
    stop: str | list[str] | None = None
    user: Text | None = Field(default=None, max_length=256)

    @field_validator("stop")
    @classmethod
    def _check_stop(cls, value: str | list[str] | None) -> str | list[str] | None:
        stops = [value] if isinstance(value, str) else value or []
        if len(stops) > 4 or any(not s for s in stops):
            raise ValueError("stop takes at most 4 non-empty strings")
        for stop in stops:
            checked_text(stop)
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
