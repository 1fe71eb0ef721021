"""The one table of run and LLM error codes: each code answers with the status it
always has, however the agent reported the failure."""

from __future__ import annotations

import pytest

from main_backend.api.errors import error_responses, run_error_status
from main_backend.llm_client import LLM_CODES, agent_error


@pytest.mark.parametrize(
    ("code", "status"),
    [
        ("llm_rate_limited", 429),
        ("llm_upstream_error", 502),
        ("llm_agent_unavailable", 503),
        ("llm_timeout", 504),
        ("interrupted", 503),
        ("database_unavailable", 503),
        ("internal_error", 500),
        ("a_code_from_a_newer_version", 502),
    ],
)
def test_each_run_error_code_has_its_status(code: str, status: int) -> None:
    assert run_error_status(code) == status


@pytest.mark.parametrize(
    ("agent_code", "agent_status", "code", "status", "retryable"),
    [
        ("upstream_rate_limited", 429, "llm_rate_limited", 429, True),
        ("upstream_timeout", 504, "llm_timeout", 504, True),
        ("upstream_error", 502, "llm_upstream_error", 502, True),
        ("upstream_auth_failed", 502, "llm_upstream_error", 502, False),
        ("invalid_request", 422, "llm_upstream_error", 502, False),
        ("payload_too_large", 413, "llm_upstream_error", 502, False),
        ("provider_not_configured", 503, "llm_agent_unavailable", 503, False),
        ("unauthorized", 401, "llm_agent_unavailable", 503, False),
        ("something_new", 500, "llm_agent_unavailable", 503, True),
        # No known code (a proxy's page): the agent's HTTP status decides.
        (None, 429, "llm_rate_limited", 429, True),
        (None, 504, "llm_timeout", 504, True),
        (None, 400, "llm_upstream_error", 502, False),
        (None, 413, "llm_upstream_error", 502, False),
        (None, 422, "llm_upstream_error", 502, False),
        (None, 401, "llm_agent_unavailable", 503, False),
        (None, 500, "llm_agent_unavailable", 503, True),
        (None, None, "llm_agent_unavailable", 503, True),
    ],
)
def test_agent_errors_map_to_our_code_and_status(
    agent_code: str | None, agent_status: int | None, code: str, status: int, retryable: bool
) -> None:
    error = agent_error(agent_code, agent_status, "it failed")
    assert (error.code, run_error_status(error.code), error.retryable) == (
        code,
        status,
        retryable,
    )


def test_every_llm_code_is_in_the_table_and_documented_under_its_status() -> None:
    assert error_responses(*LLM_CODES) == {
        429: {"description": "llm_rate_limited"},
        502: {"description": "llm_upstream_error"},
        503: {"description": "llm_agent_unavailable"},
        504: {"description": "llm_timeout"},
    }


def test_codes_sharing_a_status_are_listed_together_in_order() -> None:
    assert error_responses("thread_busy", "llm_timeout", "version_conflict") == {
        409: {"description": "thread_busy, version_conflict"},
        504: {"description": "llm_timeout"},
    }
