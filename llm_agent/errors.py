"""Errors of the llm_agent domain, each carrying its API code and HTTP status.

Providers raise these; `api/errors.py` turns them into the error envelope in one
place, and the streaming route turns them into the terminal `error` event.
"""

from __future__ import annotations

from typing import Any


class AgentError(Exception):
    code = "internal_error"
    status_code = 500
    retryable = False

    def __init__(
        self,
        message: str,
        *,
        retryable: bool | None = None,
        retry_after: float | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if retryable is not None:
            self.retryable = retryable
        self.retry_after = retry_after
        self.details = details


class InvalidRequest(AgentError):
    code = "invalid_request"
    status_code = 422


class Unauthorized(AgentError):
    code = "unauthorized"
    status_code = 401


class ProviderNotConfigured(AgentError):
    code = "provider_not_configured"
    status_code = 503


class UpstreamError(AgentError):
    code = "upstream_error"
    status_code = 502


class UpstreamAuthFailed(AgentError):
    code = "upstream_auth_failed"
    status_code = 502


class UpstreamRateLimited(AgentError):
    code = "upstream_rate_limited"
    status_code = 429
    retryable = True


class UpstreamTimeout(AgentError):
    code = "upstream_timeout"
    status_code = 504
    retryable = True
