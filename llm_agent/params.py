"""A generation request, and its parameters with the defaults and limits of settings."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

from llm_agent.errors import InvalidRequest
from llm_agent.providers.base import GenerationParams
from llm_agent.settings import Settings
from stubichat_common.limits import message_problems
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


def resolve_params(
    request: GenerateRequest, settings: Settings, request_id: str | None = None
) -> GenerationParams:
    """Apply defaults and settings limits; raise `InvalidRequest` naming each bad field."""
    model = request.model or settings.default_model
    contents = [m.content for m in request.messages]
    problems: list[dict[str, Any]] = [
        {"field": field, "message": message}
        for field, message in [
            *settings.parameter_problems(model, request.max_tokens),
            *message_problems(contents, settings.max_messages, settings.max_content_chars),
        ]
    ]
    if problems:
        fields = ", ".join(p["field"] for p in problems)
        raise InvalidRequest(f"invalid value for {fields}", details=problems)
    stop = [request.stop] if isinstance(request.stop, str) else request.stop
    return GenerationParams(
        messages=[{"role": m.role, "content": m.content} for m in request.messages],
        model=model,
        temperature=settings.temperature if request.temperature is None else request.temperature,
        max_tokens=request.max_tokens or settings.max_tokens,
        top_p=request.top_p,
        stop=stop,
        user=request.user,
        request_id=request_id,
    )
