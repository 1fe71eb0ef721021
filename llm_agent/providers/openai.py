"""The `openai` provider: any OpenAI-compatible chat-completions server.

It keeps the SDK for what the SDK is good at (auth headers, connection pooling,
typed errors, SSE decoding and typed chunks) but posts a body built here
through `AsyncOpenAI.post`. The typed `chat.completions.create()` runs every
message through `maybe_transform`, which costs CPU proportional to the prompt
(about 180 ms for 400 messages); posting the plain dict costs only its JSON
serialisation. Retries are ours (the SDK's are switched off) so that the policy
in `retry.py` is the only one and a stream is never retried after its first
delta.

`post(..., stream_cls=...)` and `AsyncStream._iter_events` are the SDK's
private API: pyproject.toml holds `openai` to one major version, and
tests/unit/llm_agent/test_openai_sdk_api.py fails by name when either moves.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import TYPE_CHECKING, Any

import httpx2
import openai
from openai import AsyncOpenAI, AsyncStream, RequestOptions
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletion, ChatCompletionChunk

from llm_agent.errors import (
    AgentError,
    ProviderNotConfigured,
    UpstreamAuthFailed,
    UpstreamError,
    UpstreamRateLimited,
    UpstreamTimeout,
)
from llm_agent.providers.base import (
    Completion,
    Delta,
    Finish,
    GenerationParams,
    ProviderHealth,
    StreamItem,
    Usage,
)
from llm_agent.providers.retry import RetryPolicy, parse_retry_after
from llm_agent.settings import OPENAI_DEFAULT_BASE_URL, Settings

if TYPE_CHECKING:
    # Private, like `_iter_events` that yields it: tests/unit/llm_agent/test_openai_sdk_api.py
    # checks that both are still there.
    from openai._streaming import ServerSentEvent

# A local OpenAI-compatible server (vLLM, Ollama, llama.cpp) may need no key,
# but the SDK refuses to build a client without one.
_PLACEHOLDER_KEY = "not-needed"


class _ChunkStream(AsyncStream[ChatCompletionChunk]):
    """The SDK's chunk stream, also telling whether the `[DONE]` terminator came.

    The SDK ends iteration quietly both on `[DONE]` and when the body simply
    stops; only the former is a complete answer.
    """

    saw_done = False

    async def _iter_events(self) -> AsyncIterator[ServerSentEvent]:
        async for sse in super()._iter_events():
            if sse.data.startswith("[DONE]"):
                self.saw_done = True
            yield sse


def _usage(usage: CompletionUsage | None) -> Usage | None:
    if usage is None:
        return None
    return Usage(usage.prompt_tokens, usage.completion_tokens, usage.total_tokens)


def map_openai_error(exc: Exception) -> AgentError:
    """Translate an SDK or decoding failure into the agent's error codes."""
    if isinstance(exc, openai.APITimeoutError):
        return UpstreamTimeout("the upstream did not answer in time")
    if isinstance(exc, openai.APIConnectionError):
        return UpstreamError("the connection to the upstream failed", retryable=True)
    if isinstance(exc, openai.APIStatusError):
        status = exc.status_code
        upstream_message = _upstream_message(exc)
        details = [{"upstream_status": status, "upstream_message": upstream_message}]
        retry_after = parse_retry_after(dict(exc.response.headers))
        if status in (401, 403):
            return UpstreamAuthFailed(
                f"the upstream rejected our credentials ({status})", details=details
            )
        if status == 429:
            return UpstreamRateLimited(
                "the upstream is rate limiting requests", retry_after=retry_after, details=details
            )
        if status == 408:
            return UpstreamTimeout("the upstream timed out the request (408)", details=details)
        if status >= 500:
            return UpstreamError(
                f"the upstream failed ({status})",
                retryable=True,
                retry_after=retry_after,
                details=details,
            )
        return UpstreamError(
            f"the upstream refused the request ({status}): {upstream_message}",
            retryable=False,
            details=details,
        )
    if isinstance(exc, openai.APIError):
        # An error event inside a stream: the upstream failed while answering.
        return UpstreamError(f"the upstream reported an error: {exc.message}", retryable=True)
    if isinstance(exc, ValueError):
        return UpstreamError("the upstream sent a malformed response", retryable=False)
    return UpstreamError(f"unexpected upstream failure: {type(exc).__name__}", retryable=False)


def _stream_fault(exc: Exception) -> AgentError:
    """A fault of a stream's body, once the upstream accepted the request.

    Dropped, truncated, malformed or stalled alike, it is transient: the one
    rule for streams (see `OpenAIProvider.stream`) retries it before the first
    delta, and after it tells the caller that asking again may help.
    """
    error = map_openai_error(exc)
    error.retryable = True
    return error


def _upstream_message(exc: openai.APIStatusError) -> str:
    body = exc.body
    if isinstance(body, dict):
        message = body.get("message")
        if isinstance(message, str):
            return message
    return exc.message


class OpenAIProvider:
    name = "openai"

    def __init__(
        self,
        settings: Settings,
        on_retry: Callable[[AgentError], None] | None = None,
    ) -> None:
        self.base_url = settings.effective_base_url
        # OpenAI's own endpoint cannot work without a key; a local server may.
        self.configured = bool(settings.openai_api_key) or (
            self.base_url.rstrip("/") != OPENAI_DEFAULT_BASE_URL
        )
        self._client = AsyncOpenAI(
            api_key=settings.openai_api_key or _PLACEHOLDER_KEY,
            base_url=self.base_url,
            organization=settings.openai_organization,
            max_retries=0,
            # The SDK's defaults otherwise (redirects, timeouts), with our bound on
            # connections: a stream holds one for its whole length, and past the
            # bound a generation waits for one instead of starting.
            http_client=openai.DefaultAsyncHttpxClient(
                limits=httpx2.Limits(
                    max_connections=settings.openai_max_connections,
                    max_keepalive_connections=min(100, settings.openai_max_connections),
                )
            ),
            timeout=openai.Timeout(
                connect=settings.openai_connect_timeout,
                read=settings.openai_read_timeout,
                write=settings.openai_read_timeout,
                pool=settings.openai_connect_timeout,
            ),
        )
        self._retry = RetryPolicy(
            max_attempts=settings.retry_max_attempts,
            base_delay=settings.retry_base_delay,
            max_delay=settings.retry_max_delay,
            retry_after_max=settings.retry_after_max,
        )
        self._on_retry = on_retry

    @staticmethod
    def request_body(params: GenerationParams, *, stream: bool) -> dict[str, Any]:
        """The chat-completions body, built directly (no SDK transform)."""
        body: dict[str, Any] = {
            "model": params.model,
            "messages": params.messages,
            "temperature": params.temperature,
            "max_tokens": params.max_tokens,
            "stream": stream,
        }
        if stream:
            body["stream_options"] = {"include_usage": True}
        if params.top_p is not None:
            body["top_p"] = params.top_p
        if params.stop:
            body["stop"] = params.stop
        if params.user is not None:
            body["user"] = params.user
        return body

    def _options(self, params: GenerationParams) -> RequestOptions:
        return {"headers": {"X-Request-ID": params.request_id}} if params.request_id else {}

    def _require_configured(self) -> None:
        if not self.configured:
            raise ProviderNotConfigured(
                "LLM_PROVIDER is openai but OPENAI_API_KEY is not set "
                f"(OPENAI_BASE_URL is {self.base_url})"
            )

    async def complete(self, params: GenerationParams) -> Completion:
        self._require_configured()
        body = self.request_body(params, stream=False)

        async def once() -> Completion:
            try:
                completion = await self._client.post(
                    "/chat/completions",
                    cast_to=ChatCompletion,
                    body=body,
                    options=self._options(params),
                )
            except (openai.OpenAIError, ValueError) as exc:
                raise map_openai_error(exc) from exc
            if not completion.choices:
                raise UpstreamError("the upstream answered with no choices", retryable=True)
            choice = completion.choices[0]
            return Completion(
                content=choice.message.content or "",
                model=completion.model or params.model,
                finish_reason=choice.finish_reason,
                usage=_usage(completion.usage),
            )

        return await self._retry.run(once, on_retry=self._on_retry)

    async def stream(self, params: GenerationParams) -> AsyncIterator[StreamItem]:
        self._require_configured()
        body = self.request_body(params, stream=True)
        attempt = 1
        while True:
            sent_delta = False
            try:
                async for item in self._stream_once(params, body):
                    sent_delta = sent_delta or isinstance(item, Delta)
                    yield item
                return
            except AgentError as error:
                # The one rule for streams: a fault before the first delta is retried
                # like any transient failure (stream faults, i.e. a dropped connection,
                # a truncated or malformed chunk, no [DONE], no finish reason, a stall,
                # are all transient; a refusal by status keeps its own verdict), and
                # never after it: text has gone out, and a retry would send it twice.
                if sent_delta:
                    raise
                await self._retry.backoff(attempt, error, self._on_retry)
                attempt += 1

    async def _stream_once(
        self, params: GenerationParams, body: dict[str, Any]
    ) -> AsyncIterator[StreamItem]:
        try:
            stream = await self._client.post(
                "/chat/completions",
                cast_to=ChatCompletion,
                body=body,
                options=self._options(params),
                stream=True,
                stream_cls=_ChunkStream,
            )
        except (openai.OpenAIError, ValueError) as exc:
            raise map_openai_error(exc) from exc
        finish_reason: str | None = None
        usage: Usage | None = None
        model = params.model
        try:
            async for chunk in stream:
                model = chunk.model or model
                if chunk.usage is not None:
                    usage = _usage(chunk.usage)
                for choice in chunk.choices:
                    if choice.delta.content:
                        yield Delta(choice.delta.content)
                    if choice.finish_reason:
                        finish_reason = choice.finish_reason
        except (openai.OpenAIError, ValueError) as exc:
            raise _stream_fault(exc) from exc
        finally:
            await stream.close()
        if not stream.saw_done:
            raise UpstreamError(
                "the upstream stream ended without its [DONE] terminator", retryable=True
            )
        if finish_reason is None:
            raise UpstreamError("the upstream stream ended without a finish reason", retryable=True)
        yield Finish(finish_reason, model, usage)

    def health(self) -> ProviderHealth:
        detail = {"base_url": self.base_url}
        if not self.configured:
            detail["error"] = "OPENAI_API_KEY is not set"
        return ProviderHealth(usable=self.configured, detail=detail)

    async def aclose(self) -> None:
        await self._client.close()
