"""Model parameter management: defaults, allowed models and settings limits."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from llm_agent.errors import InvalidRequest
from llm_agent.params import GenerateRequest, resolve_params
from llm_agent.settings import Settings


def settings(**overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "default_model": "gpt-4o-mini",
        "allowed_models": "gpt-4o-mini,gpt-4o",
        "temperature": 0.3,
        "max_tokens": 1000,
        "max_messages": 3,
        "max_content_chars": 20,
    }
    return Settings(_env_file=None, **{**values, **overrides})


def request(**fields: Any) -> GenerateRequest:
    return GenerateRequest.model_validate(
        {"messages": [{"role": "user", "content": "hi"}], **fields}
    )


def test_defaults_come_from_settings() -> None:
    params = resolve_params(request(), settings(), request_id="rid")
    assert (params.model, params.temperature, params.max_tokens, params.request_id) == (
        "gpt-4o-mini",
        0.3,
        1000,
        "rid",
    )
    assert params.messages == [{"role": "user", "content": "hi"}]


def test_explicit_values_win() -> None:
    params = resolve_params(
        request(model="gpt-4o", temperature=0, max_tokens=10, top_p=0.5, stop="END", user="u1"),
        settings(),
    )
    assert (
        params.model,
        params.temperature,
        params.max_tokens,
        params.top_p,
        params.stop,
        params.user,
    ) == ("gpt-4o", 0, 10, 0.5, ["END"], "u1")


def _fields(error: InvalidRequest) -> list[str]:
    return [d["field"] for d in error.details or []]


def test_unknown_model_is_named() -> None:
    with pytest.raises(InvalidRequest) as caught:
        resolve_params(request(model="gpt-9"), settings())
    assert _fields(caught.value) == ["model"]
    assert "gpt-9" in caught.value.details[0]["message"]  # type: ignore[index]


def test_any_model_when_star_is_allowed() -> None:
    params = resolve_params(request(model="llama3:8b"), settings(allowed_models="*"))
    assert params.model == "llama3:8b"


def test_max_tokens_above_the_cap() -> None:
    with pytest.raises(InvalidRequest) as caught:
        resolve_params(request(max_tokens=1001), settings())
    assert _fields(caught.value) == ["max_tokens"]


def test_too_many_messages_and_too_long_content() -> None:
    messages = [{"role": "user", "content": "x" * 21}] + [{"role": "user", "content": "y"}] * 3
    with pytest.raises(InvalidRequest) as caught:
        resolve_params(GenerateRequest.model_validate({"messages": messages}), settings())
    assert _fields(caught.value) == ["messages", "messages.0.content"]


@pytest.mark.parametrize(
    ("fields", "bad_field"),
    [
        ({"temperature": 2.1}, "temperature"),
        ({"temperature": -0.1}, "temperature"),
        ({"temperature": "0.7"}, "temperature"),
        ({"top_p": 1.5}, "top_p"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"stop": ["a", "b", "c", "d", "e"]}, "stop"),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "tool", "content": "x"}]}, "messages"),
        ({"messages": [{"role": "user", "content": ""}]}, "messages"),
        ({"messages": [{"role": "user", "content": "a\x00b"}]}, "messages"),
        ({"unexpected": 1}, "unexpected"),
    ],
)
def test_request_shape_rules(fields: dict[str, Any], bad_field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        request(**fields)
    assert caught.value.errors()[0]["loc"][0] == bad_field


def test_settings_refuse_a_default_model_outside_the_allowed_list() -> None:
    with pytest.raises(ValidationError, match="DEFAULT_MODEL"):
        settings(default_model="gpt-9")
