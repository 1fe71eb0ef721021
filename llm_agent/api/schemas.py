"""Response bodies of the llm_agent HTTP API (its request body, `GenerateRequest`, is
the parameters of a generation: `llm_agent/params.py`)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel


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
