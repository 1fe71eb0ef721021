"""Generation providers: `openai` (any OpenAI-compatible server) and `echo` (offline)."""

from __future__ import annotations

from collections.abc import Callable

from llm_agent.errors import AgentError
from llm_agent.providers.base import Provider
from llm_agent.settings import Settings


def build_provider(
    settings: Settings, on_retry: Callable[[AgentError], None] | None = None
) -> Provider:
    if settings.provider_name == "openai":
        from llm_agent.providers.openai import OpenAIProvider

        return OpenAIProvider(settings, on_retry=on_retry)
    from llm_agent.providers.echo import EchoProvider

    return EchoProvider(word_delay=settings.echo_word_delay)
