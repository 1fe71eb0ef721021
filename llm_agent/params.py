"""Model parameter management: defaults and the limits that come from settings."""

from __future__ import annotations

from typing import Any

from llm_agent.api.schemas import GenerateRequest
from llm_agent.errors import InvalidRequest
from llm_agent.providers.base import GenerationParams
from llm_agent.settings import Settings


def resolve_params(
    request: GenerateRequest, settings: Settings, request_id: str | None = None
) -> GenerationParams:
    """Apply defaults and settings limits; raise `InvalidRequest` naming each bad field."""
    model = request.model or settings.default_model
    problems: list[dict[str, Any]] = [
        {"field": field, "message": message}
        for field, message in settings.parameter_problems(model, request.max_tokens)
    ]
    if len(request.messages) > settings.max_messages:
        problems.append(
            {
                "field": "messages",
                "message": f"at most {settings.max_messages} messages are accepted",
            }
        )
    for index, message in enumerate(request.messages):
        if len(message.content) > settings.max_content_chars:
            problems.append(
                {
                    "field": f"messages.{index}.content",
                    "message": f"content must be at most {settings.max_content_chars} characters",
                }
            )
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
