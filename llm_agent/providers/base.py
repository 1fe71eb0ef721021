"""What every provider takes and gives back, independent of any upstream SDK."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any, Protocol


@dataclass(frozen=True, slots=True)
class GenerationParams:
    """A validated generation request; see `llm_agent.params.resolve_params`."""

    messages: list[dict[str, str]]
    model: str
    temperature: float
    max_tokens: int
    top_p: float | None = None
    stop: list[str] | None = None
    user: str | None = None
    request_id: str | None = None


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int

    def as_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass(frozen=True, slots=True)
class Completion:
    content: str
    model: str
    finish_reason: str | None
    usage: Usage | None


@dataclass(frozen=True, slots=True)
class Delta:
    text: str


@dataclass(frozen=True, slots=True)
class Finish:
    """The last item of every successful stream."""

    finish_reason: str
    model: str
    usage: Usage | None


StreamItem = Delta | Finish


@dataclass(slots=True)
class ProviderHealth:
    usable: bool
    detail: dict[str, Any] = field(default_factory=dict)


class Provider(Protocol):
    name: str

    async def complete(self, params: GenerationParams) -> Completion:
        """One whole answer; raises `AgentError` subclasses."""
        ...

    def stream(self, params: GenerationParams) -> AsyncIterator[StreamItem]:
        """Deltas then exactly one `Finish`; raises `AgentError` subclasses."""
        ...

    def health(self) -> ProviderHealth: ...

    async def aclose(self) -> None: ...
