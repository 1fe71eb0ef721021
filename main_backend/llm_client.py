"""The main backend's client of the llm_agent: streamed generation and a health probe.

Every failure, whatever its form (a JSON error before the stream, an `error` event,
a cut-off or malformed stream, a refused connection, a timeout), is raised as one
`LLMError` carrying the main backend's API code; the HTTP status each code answers
with is the API layer's business (`main_backend/api/errors.py`).
"""

from __future__ import annotations

import json
import time
from collections.abc import AsyncGenerator, AsyncIterator
from contextlib import aclosing
from dataclasses import dataclass
from typing import Any

import httpx
from loguru import logger

CONNECT_TIMEOUT = 5.0
HEALTH_TIMEOUT = 2.0
# An idle connection to the agent is dropped after this long, well before the agent's
# server closes it (uvicorn: 5 s): sent on a connection the server is closing, a turn
# would fail with a ReadError before the agent ever saw it.
KEEPALIVE_SECONDS = 2.0

RATE_LIMITED = "llm_rate_limited"
TIMEOUT = "llm_timeout"
UPSTREAM = "llm_upstream_error"
UNAVAILABLE = "llm_agent_unavailable"
# Every code an `LLMError` carries.
LLM_CODES = (RATE_LIMITED, UPSTREAM, UNAVAILABLE, TIMEOUT)

# Agent error code -> our API code, retryable unless the agent says otherwise (its
# `error` events carry their own flag).
AGENT_CODES: dict[str, tuple[str, bool]] = {
    "upstream_rate_limited": (RATE_LIMITED, True),
    "upstream_timeout": (TIMEOUT, True),
    "upstream_error": (UPSTREAM, True),
    "upstream_auth_failed": (UPSTREAM, False),
    "invalid_request": (UPSTREAM, False),  # we validate first: should not happen
    "payload_too_large": (UPSTREAM, False),
    "provider_not_configured": (UNAVAILABLE, False),
    "unauthorized": (UNAVAILABLE, False),  # our LLM_AGENT_TOKEN is wrong
}
# An error without a known code (a proxy's page, a newer agent) maps by status;
# anything else, including other 5xx, means the agent is unavailable.
AGENT_STATUSES: dict[int, str] = {
    429: "upstream_rate_limited",
    504: "upstream_timeout",
    400: "invalid_request",
    413: "payload_too_large",
    422: "invalid_request",
    401: "unauthorized",
}


class LLMError(Exception):
    """A failed LLM call, as the main backend's API reports it (`code`, one of `LLM_CODES`)."""

    def __init__(
        self,
        code: str,
        message: str,
        *,
        retryable: bool,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.code, self.message = code, message
        self.retryable, self.retry_after = retryable, retry_after


@dataclass(frozen=True, slots=True)
class LLMDelta:
    text: str


@dataclass(frozen=True, slots=True)
class LLMDone:
    finish_reason: str | None
    usage: dict[str, Any] | None
    model: str
    latency_ms: float
    ttft_ms: float | None


def agent_error(
    agent_code: str | None,
    status: int | None,
    message: str,
    *,
    retryable: bool | None = None,
    retry_after: float | None = None,
) -> LLMError:
    """Map an error the agent reported (by its code, else by HTTP status) to ours."""
    code = agent_code if agent_code in AGENT_CODES else AGENT_STATUSES.get(status or 0, "")
    ours, default_retryable = AGENT_CODES.get(code, (UNAVAILABLE, True))
    if ours == UNAVAILABLE:  # the agent's own trouble: details for operators, not for clients
        logger.warning("LLM agent unavailable: {} {}: {}", status, agent_code, message)
        message = "the LLM agent is unavailable"
    return LLMError(
        ours,
        message,
        retry_after=retry_after,
        retryable=default_retryable if retryable is None else retryable,
    )


def _failed(code: str, message: str, exc: Exception) -> LLMError:
    logger.warning("LLM agent call failed: {} ({})", code, _describe(exc))
    return LLMError(code, message, retryable=True)


def _describe(exc: Exception) -> str:
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds >= 0 else None


def _error_from_response(response: httpx.Response) -> LLMError:
    try:
        error = response.json()["error"]
        code, message = str(error["code"]), str(error["message"])
    except (ValueError, KeyError, TypeError):
        error, code = {}, None
        message = f"the LLM agent answered HTTP {response.status_code}"
    retry_after = _seconds(response.headers.get("retry-after"))
    if retry_after is None and isinstance(error, dict):
        retry_after = _seconds(error.get("retry_after"))
    return agent_error(code, response.status_code, message, retry_after=retry_after)


async def _sse_events(response: httpx.Response) -> AsyncGenerator[tuple[str, str], None]:
    """(event name, data) as each event completes; comments such as `: ping` are skipped."""
    name, data = "message", list[str]()
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield name, "\n".join(data)
            name, data = "message", []
        elif not line.startswith(":"):
            field, _, value = line.partition(":")
            value = value.removeprefix(" ")
            if field == "event":
                name = value
            elif field == "data":
                data.append(value)


def _parse_event(name: str, raw: str) -> LLMDelta | LLMDone | None:
    """One agent event: a delta, the done, None (unknown: ignored); `error` raises."""
    try:
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise TypeError("the data is not an object")
        if name == "delta":
            return LLMDelta(_typed(data["text"], str))
        if name == "done":
            return LLMDone(
                finish_reason=_typed(data.get("finish_reason"), str | None),
                usage=_typed(data.get("usage"), dict | None),
                model=_typed(data["model"], str),
                latency_ms=float(data["latency_ms"]),
                ttft_ms=None if (ttft := data.get("ttft_ms")) is None else float(ttft),
            )
    except (ValueError, KeyError, TypeError) as exc:
        raise LLMError(
            UPSTREAM, f"the LLM agent sent a malformed {name!r} event", retryable=False
        ) from exc
    if name == "error":
        retryable = data.get("retryable")
        raise agent_error(
            str(data.get("code")),
            None,
            str(data.get("message") or "failed"),
            retryable=retryable if isinstance(retryable, bool) else None,
            retry_after=_seconds(data.get("retry_after")),
        )
    return None  # an event kind this client does not know


def _typed(value: Any, kind: Any) -> Any:
    if not isinstance(value, kind):
        raise TypeError(f"unexpected {type(value).__name__}")
    return value


class LLMAgentClient:
    """One pool of at most `max_connections` connections to the agent.

    A streamed generation holds its connection until the answer ends, so the
    pool bounds this process's concurrent generations. A turn that finds it
    full waits at most `pool_timeout` for a connection, then fails as
    `llm_agent_unavailable` (retryable) saying so: the wait is never charged to
    the generation's own `timeout`.
    """

    def __init__(
        self,
        base_url: str,
        timeout: float,
        token: str | None = None,
        *,
        max_connections: int = 200,
        pool_timeout: float = 5.0,
    ) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.max_connections = max_connections
        self._client = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            headers=headers,
            timeout=httpx.Timeout(
                timeout, connect=min(CONNECT_TIMEOUT, timeout), pool=pool_timeout
            ),
            # Idle connections are kept as many as may be open: a burst of turns
            # reuses them instead of opening new ones after the last burst.
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=KEEPALIVE_SECONDS,
            ),
        )
        # Health probes get a small pool of their own: a pool full of answers is
        # this process being busy, not the agent being unhealthy.
        self._probe = httpx.AsyncClient(
            base_url=base_url.rstrip("/"),
            timeout=HEALTH_TIMEOUT,
            limits=httpx.Limits(max_connections=4, max_keepalive_connections=1),
        )

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._probe.aclose()

    async def stream(
        self,
        messages: list[dict[str, str]],
        *,
        model: str,
        temperature: float,
        max_tokens: int | None,
        request_id: str | None,
    ) -> AsyncIterator[LLMDelta | LLMDone]:
        """Deltas as they arrive, then one `LLMDone`; any failure raises `LLMError`."""
        body: dict[str, Any] = {"messages": messages, "model": model, "temperature": temperature}
        if max_tokens is not None:
            body["max_tokens"] = max_tokens
        headers = {"X-Request-ID": request_id} if request_id else {}
        streaming = False
        try:
            async with self._client.stream(
                "POST", "/generate/stream", json=body, headers=headers
            ) as response:
                if response.status_code != 200:
                    await response.aread()
                    raise _error_from_response(response)
                streaming = True
                done: LLMDone | None = None
                async with aclosing(_sse_events(response)) as events:
                    async for name, raw in events:
                        if done is None:  # after `done`, read to the end: the connection is reused
                            item = _parse_event(name, raw)
                            if isinstance(item, LLMDelta):
                                yield item
                            done = item if isinstance(item, LLMDone) else None
                if done is None:
                    raise LLMError(UPSTREAM, "the LLM agent's stream ended early", retryable=True)
                yield done
        except LLMError as error:
            logger.warning("LLM agent call failed: {} ({})", error.code, error.message)
            raise
        except httpx.PoolTimeout as exc:  # this process's own limit, not the agent's
            raise _failed(
                UNAVAILABLE,
                f"no connection to the LLM agent was free: all "
                f"{self.max_connections} (LLM_AGENT_MAX_CONNECTIONS) are busy "
                "with other answers; try again shortly",
                exc,
            ) from exc
        except httpx.ConnectTimeout as exc:  # nothing answers at that address
            raise _failed(UNAVAILABLE, "the LLM agent is unreachable", exc) from exc
        except httpx.TimeoutException as exc:
            raise _failed(TIMEOUT, "the LLM agent did not answer in time", exc) from exc
        except httpx.HTTPError as exc:  # refused, reset, or closed mid-stream
            code, what = (UPSTREAM, "broke off") if streaming else (UNAVAILABLE, "is unreachable")
            raise _failed(code, f"the connection to the LLM agent {what}", exc) from exc

    async def health(self) -> dict[str, Any]:
        """`{"status": "ok"|"failing", ...}` from the agent's `/health`; never raises."""
        started = time.perf_counter()
        try:
            response = await self._probe.get("/health")
            body = response.json()
        except Exception as exc:  # a health probe reports, it never raises
            return {"status": "failing", "error": _describe(exc)}
        latency_ms = round((time.perf_counter() - started) * 1000, 1)
        details = body if isinstance(body, dict) else {}
        ok = response.status_code == 200 and details.get("status") == "ok"
        result: dict[str, Any] = {
            "status": "ok" if ok else "failing",
            "latency_ms": latency_ms,
            "provider": details.get("provider"),
        }
        if not ok:
            result.update(http_status=response.status_code, checks=details.get("checks"))
        return result
