"""Model parameter settings, the same names and meaning in both services.

The main backend checks a request against them before it appends anything;
the LLM agent enforces them on every generation.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, field_validator
from pydantic_settings import BaseSettings, NoDecode

DEFAULT_ALLOWED_MODELS = [
    "gpt-4o-mini",
    "gpt-4o",
    "gpt-4.1",
    "gpt-4.1-mini",
    "gpt-4",
    "gpt-4-turbo",
    "gpt-3.5-turbo",
]


class ModelSettings(BaseSettings):
    default_model: str = "gpt-4o-mini"
    allowed_models: Annotated[list[str], NoDecode] = Field(
        default_factory=lambda: list(DEFAULT_ALLOWED_MODELS)
    )
    temperature: float = Field(default=0.7, ge=0, le=2)
    max_tokens: int = Field(default=4096, gt=0)

    @field_validator("allowed_models", mode="before")
    @classmethod
    def _split_models(cls, value: object) -> object:
        return split_list(value)

    @property
    def any_model_allowed(self) -> bool:
        return "*" in self.allowed_models

    def parameter_problems(self, model: str, max_tokens: int | None) -> list[tuple[str, str]]:
        """(field, message) for each of `model`, `max_tokens` these settings refuse."""
        problems = []
        if not self.any_model_allowed and model not in self.allowed_models:
            problems.append(
                ("model", f"unknown model {model!r}; allowed: {', '.join(self.allowed_models)}")
            )
        if max_tokens is not None and max_tokens > self.max_tokens:
            problems.append(("max_tokens", f"max_tokens must be at most {self.max_tokens}"))
        return problems


def split_list(value: object) -> object:
    """A comma-separated environment value as a list."""
    if isinstance(value, str):
        return [item.strip() for item in value.split(",") if item.strip()]
    return value
