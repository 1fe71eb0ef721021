"""Wire-level fake of the OpenAI chat-completions HTTP API with scriptable faults.

A hand-written asyncio HTTP/1.1 server, so that faults (dropped connections,
stalls, truncated chunks, malformed SSE) really happen at the socket level.

In-process use (the server runs in a background thread with its own loop)::

    with FakeOpenAI() as fake:
        fake.script(Behaviour(status=429, headers={"Retry-After": "2"}),
                    {"content": "hi there", "drop_after": 1})
        client = openai.AsyncOpenAI(api_key="k", base_url=fake.url, max_retries=0)
        ...
        assert fake.chat_requests[0].body["model"] == "gpt-4o-mini"

Out-of-process use::

    python -m tests.fakes.openai_server --port 0
    # prints "FAKE_OPENAI_URL=http://127.0.0.1:PORT/v1", serves until SIGTERM/SIGINT

and control it over HTTP: ``POST /_fake/script`` with ``{"behaviours": [{...}]}``
(appends to the queue), ``GET /_fake/requests`` (``{"requests": [...]}``) and
``POST /_fake/reset``. Control requests are not recorded.

Each ``POST /v1/chat/completions`` consumes one queued ``Behaviour`` (FIFO);
with an empty queue the default ``Behaviour()`` echoes the last user message.

What ``openai.AsyncOpenAI`` (httpx2 transport) raises for each fault:
non-200 status -> the matching ``APIStatusError`` subclass; ``delay`` past the
timeout and ``stall_after`` past the read timeout -> ``APITimeoutError``;
``drop_after`` / ``truncate_after`` -> ``APIConnectionError`` (cause: httpx2
``RemoteProtocolError``); ``malformed_after`` -> ``json.JSONDecodeError``;
``omit_done`` -> nothing, iteration just ends.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import http
import itertools
import json
import re
import signal
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from types import TracebackType
from typing import Any

MODEL_IDS = ("gpt-4o-mini", "gpt-4o", "gpt-4.1-mini", "fake-model")
MALFORMED_EVENT = b'data: {"choices": [{"delta": {"content": "oops"\n\n'
_CLIENT_GONE = (ConnectionError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError)
Reader = asyncio.StreamReader
Writer = asyncio.StreamWriter
_ERROR_DEFAULTS: dict[int, tuple[str, str | None]] = {
    400: ("invalid_request_error", None),
    401: ("invalid_request_error", "invalid_api_key"),
    403: ("permission_error", None),
    404: ("invalid_request_error", None),
    429: ("requests", "rate_limit_exceeded"),
}


@dataclass
class Behaviour:
    """How to answer one chat-completions request. All fields are optional.

    ``*_after`` faults apply to streams and fire once N content chunks were sent
    (N larger than the number of pieces: right after the last piece).
    """

    status: int = 200  # != 200: OpenAI-style error body with this status
    headers: dict[str, str] = field(default_factory=dict)  # extra headers, any response
    delay: float = 0.0  # seconds before the response headers
    content: str | None = None  # None: "You said: <last user message>"
    chunks: list[str] | None = None  # explicit stream pieces (default: word pieces)
    finish_reason: str | None = "stop"  # None: no finish chunk / null finish_reason
    usage: dict[str, Any] | None = None  # None: computed from characters and pieces
    chunk_delay: float = 0.0  # seconds between stream events
    drop_after: int | None = None  # abort the socket (non-stream: close, no response)
    omit_done: bool = False  # end the body properly but without "data: [DONE]"
    malformed_after: int | None = None  # one invalid-JSON event, then end the body
    stall_after: int | None = None  # go silent until the client leaves / stall_seconds
    stall_seconds: float = 30.0
    truncate_after: int | None = None  # half of the next event mid-chunk, then close
    error_message: str | None = None  # error body fields (defaults depend on status)
    error_type: str | None = None
    error_code: str | None = None


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-cased names
    body: Any  # parsed JSON, or None if empty / not JSON
    raw: bytes  # raw request body


@dataclass
class _Request:
    method: str
    path: str
    version: str
    headers: dict[str, str]
    raw: bytes

    @property
    def keep_alive(self) -> bool:
        conn = self.headers.get("connection", "").lower()
        return conn == "keep-alive" if self.version == "HTTP/1.0" else conn != "close"

    def json(self) -> Any:
        try:
            return json.loads(self.raw) if self.raw else None
        except ValueError:
            return None


def split_pieces(content: str) -> list[str]:
    """Split into word pieces keeping whitespace: ``"".join(pieces) == content``."""
    return re.findall(r"\S+\s*|\s+", content)


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):  # content parts
        return "".join(p.get("text", "") for p in content if isinstance(p, dict))
    return ""


def _head(status: int, headers: dict[str, str]) -> bytes:
    try:
        phrase = http.HTTPStatus(status).phrase
    except ValueError:
        phrase = "Unknown"
    lines = [f"HTTP/1.1 {status} {phrase}"] + [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def _merge(defaults: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """Extra headers replace defaults of the same (case-insensitive) name."""
    lowered = {k.lower() for k in extra}
    return {**{k: v for k, v in defaults.items() if k.lower() not in lowered}, **extra}


def _chunk(data: bytes) -> bytes:
    return b"%x\r\n%s\r\n" % (len(data), data)


def _sse(payload: Any) -> bytes:
    return b"data: " + json.dumps(payload).encode() + b"\n\n"


class FakeOpenAI:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port
        self.connection_count = 0  # TCP connections accepted (for keep-alive checks)
        self._lock = threading.Lock()
        self._queue: deque[Behaviour] = deque()
        self._requests: list[RecordedRequest] = []
        self._ids = itertools.count(1)
        self._tasks: set[asyncio.Task[Any]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None

    # ----------------------------------------------------------------- public API
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    @property
    def chat_requests(self) -> list[RecordedRequest]:
        return [r for r in self.requests if r.method == "POST" and r.path == "/v1/chat/completions"]

    def script(self, *behaviours: Behaviour | dict[str, Any]) -> None:
        items = [b if isinstance(b, Behaviour) else Behaviour(**b) for b in behaviours]
        with self._lock:
            self._queue.extend(items)

    def reset(self) -> None:
        with self._lock:
            self._queue.clear()
            self._requests.clear()

    def start(self) -> FakeOpenAI:
        """Serve from a background thread; returns once listening."""
        ready = threading.Event()
        self._error = None
        loop = self._loop = asyncio.new_event_loop()

        def run() -> None:
            try:
                loop.run_until_complete(self._serve(ready.set))
            except BaseException as exc:  # surfaced by start()
                self._error = exc
                ready.set()
            finally:
                loop.close()

        self._thread = threading.Thread(target=run, name="FakeOpenAI", daemon=True)
        self._thread.start()
        if not ready.wait(10) or self._error is not None:
            raise RuntimeError("FakeOpenAI failed to start") from self._error
        return self

    def stop(self) -> None:
        """Stop serving; open connections (even stalled streams) are cut."""
        if self._thread is None or self._loop is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            self._loop.call_soon_threadsafe(self._request_stop)
        self._thread.join(10)
        self._thread = None

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ---------------------------------------------------------------- server core
    def _request_stop(self) -> None:
        if self._stopping is not None:
            self._stopping.set()

    async def _serve(self, on_ready: Callable[[], None]) -> None:
        self._stopping = asyncio.Event()
        server = await asyncio.start_server(self._handle_connection, self.host, self.port)
        self.port = server.sockets[0].getsockname()[1]
        on_ready()
        try:
            await self._stopping.wait()
        finally:
            server.close()
            for task in list(self._tasks):
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(server.wait_closed(), 1)

    async def _handle_connection(self, reader: Reader, writer: Writer) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._lock:
            self.connection_count += 1
        try:
            while (request := await self._read_request(reader)) is not None:
                keep_open = await self._dispatch(request, reader, writer)
                if not (keep_open and request.keep_alive):
                    break
        except _CLIENT_GONE:
            pass  # client went away or sent garbage
        except asyncio.CancelledError:
            pass  # stop(); a cancelled handler task makes 3.11's asyncio log an error
        finally:
            self._tasks.discard(task)
            writer.close()

    async def _read_request(self, reader: Reader) -> _Request | None:
        try:
            head = await reader.readuntil(b"\r\n\r\n")
        except asyncio.IncompleteReadError:
            return None  # clean EOF between requests
        request_line, *header_lines = head.decode("latin-1").split("\r\n")
        method, target, version = request_line.split(" ", 2)
        headers: dict[str, str] = {}
        for line in header_lines:
            if line:
                name, _, value = line.partition(":")
                headers[name.strip().lower()] = value.strip()
        if "chunked" in headers.get("transfer-encoding", "").lower():
            parts = []
            while size := int((await reader.readuntil(b"\r\n")).split(b";")[0], 16):
                parts.append(await reader.readexactly(size))
                await reader.readexactly(2)
            while await reader.readuntil(b"\r\n") != b"\r\n":
                pass  # trailers
            raw = b"".join(parts)
        else:
            raw = await reader.readexactly(int(headers.get("content-length", "0")))
        return _Request(method.upper(), target.split("?", 1)[0], version, headers, raw)

    async def _dispatch(self, req: _Request, reader: Reader, writer: Writer) -> bool:
        """Answer one request; return False if the connection must not be reused."""
        if req.path.startswith("/_fake/"):
            return await self._control(req, writer)
        with self._lock:
            self._requests.append(
                RecordedRequest(req.method, req.path, req.headers, req.json(), req.raw)
            )
        if (req.method, req.path) == ("POST", "/v1/chat/completions"):
            with self._lock:
                behaviour = self._queue.popleft() if self._queue else Behaviour()
            return await self._chat(req, behaviour, reader, writer)
        if (req.method, req.path) == ("GET", "/v1/models"):
            data = [
                {"id": m, "object": "model", "created": 0, "owned_by": "fake"} for m in MODEL_IDS
            ]
            return await self._send_json(writer, req, 200, {"object": "list", "data": data})
        return await self._send_error(writer, req, 404, f"Invalid URL ({req.method} {req.path})")

    async def _control(self, req: _Request, writer: Writer) -> bool:
        route = (req.method, req.path)
        if route == ("POST", "/_fake/script"):
            body = req.json()
            try:
                self.script(*body["behaviours"])
            except (TypeError, KeyError) as exc:
                return await self._send_error(writer, req, 400, f"bad script: {exc!r}")
            with self._lock:
                queued = len(self._queue)
            return await self._send_json(writer, req, 200, {"queued": queued})
        if route == ("GET", "/_fake/requests"):
            recorded = [
                {**asdict(r), "raw": r.raw.decode("utf-8", "replace")} for r in self.requests
            ]
            return await self._send_json(writer, req, 200, {"requests": recorded})
        if route == ("POST", "/_fake/reset"):
            self.reset()
            return await self._send_json(writer, req, 200, {"ok": True})
        return await self._send_error(
            writer, req, 404, f"Unknown control endpoint {req.method} {req.path}"
        )

    # ------------------------------------------------------------------ responses
    async def _send_json(
        self,
        writer: Writer,
        req: _Request,
        status: int,
        payload: Any,
        extra: dict[str, str] | None = None,
    ) -> bool:
        body = json.dumps(payload).encode()
        defaults = {
            "Content-Type": "application/json",
            "Content-Length": str(len(body)),
            "Connection": "keep-alive" if req.keep_alive else "close",
            "x-request-id": f"req_fake_{next(self._ids)}",
        }
        writer.write(_head(status, _merge(defaults, extra or {})) + body)
        await writer.drain()
        return True

    async def _send_error(
        self,
        writer: Writer,
        req: _Request,
        status: int,
        message: str | None = None,
        type_: str | None = None,
        code: str | None = None,
        extra: dict[str, str] | None = None,
    ) -> bool:
        default_type, default_code = _ERROR_DEFAULTS.get(
            status, ("server_error" if status >= 500 else "invalid_request_error", None)
        )
        error = {
            "message": message or f"Fake upstream error: {status}",
            "type": type_ or default_type,
            "param": None,
            "code": code or default_code,
        }
        return await self._send_json(writer, req, status, {"error": error}, extra)

    async def _chat(self, req: _Request, b: Behaviour, reader: Reader, writer: Writer) -> bool:
        if b.delay:
            await asyncio.sleep(b.delay)
        if b.status != 200:
            return await self._send_error(
                writer, req, b.status, b.error_message, b.error_type, b.error_code, b.headers
            )
        body = req.json()
        if not isinstance(body, dict):
            return await self._send_error(
                writer, req, 400, "Request body must be a JSON object", extra=b.headers
            )
        messages = [m for m in body.get("messages") or [] if isinstance(m, dict)]
        if b.content is not None:
            content = b.content
        elif b.chunks is not None:
            content = "".join(b.chunks)
        else:
            user = [_text_of(m.get("content")) for m in messages if m.get("role") == "user"]
            content = f"You said: {user[-1]}" if user else "Hello from the fake upstream."
        pieces = list(b.chunks) if b.chunks is not None else split_pieces(content)
        prompt_tokens = sum(len(_text_of(m.get("content"))) for m in messages) // 4 + 1
        usage = (
            b.usage
            if b.usage is not None
            else {
                "prompt_tokens": prompt_tokens,
                "completion_tokens": len(pieces),
                "total_tokens": prompt_tokens + len(pieces),
            }
        )
        base = {
            "id": f"chatcmpl-fake{next(self._ids)}",
            "created": int(time.time()),
            "model": body.get("model"),
        }
        if not body.get("stream"):
            if b.drop_after is not None:
                writer.close()  # no response at all
                return False
            choice = {
                "index": 0,
                "message": {"role": "assistant", "content": content, "refusal": None},
                "logprobs": None,
                "finish_reason": b.finish_reason,
            }
            payload = {**base, "object": "chat.completion", "choices": [choice], "usage": usage}
            return await self._send_json(writer, req, 200, payload, b.headers)
        include_usage = bool((body.get("stream_options") or {}).get("include_usage"))
        return await self._stream(
            req, b, pieces, usage if include_usage else None, base, reader, writer
        )

    async def _stream(
        self,
        req: _Request,
        b: Behaviour,
        pieces: list[str],
        usage: dict[str, Any] | None,
        base: dict[str, Any],
        reader: Reader,
        writer: Writer,
    ) -> bool:
        def event(delta: dict[str, Any], finish_reason: str | None = None) -> bytes:
            choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish_reason}
            extra = {"usage": None} if usage is not None else {}
            return _sse({**base, "object": "chat.completion.chunk", "choices": [choice], **extra})

        defaults = {
            "Content-Type": "text/event-stream; charset=utf-8",
            "Transfer-Encoding": "chunked",
            "Cache-Control": "no-cache",
            "Connection": "keep-alive" if req.keep_alive else "close",
            "x-request-id": f"req_fake_{next(self._ids)}",
        }
        writer.write(_head(200, _merge(defaults, b.headers)))
        await writer.drain()

        first = True

        async def send(data: bytes) -> None:
            nonlocal first
            if b.chunk_delay and not first:
                await asyncio.sleep(b.chunk_delay)
            first = False
            writer.write(_chunk(data))
            await writer.drain()

        async def end_body() -> None:
            writer.write(b"0\r\n\r\n")  # chunked terminator
            await writer.drain()

        tail = [event({}, b.finish_reason)] if b.finish_reason is not None else []
        if usage is not None:
            tail.append(
                _sse({**base, "object": "chat.completion.chunk", "choices": [], "usage": usage})
            )
        content_events = [event({"content": p}) for p in pieces]

        await send(event({"role": "assistant", "content": ""}))

        def due(after: int | None, sent: int) -> bool:  # N > len(pieces): after the last one
            return after is not None and sent >= min(after, len(pieces))

        for sent in range(len(pieces) + 1):
            if due(b.drop_after, sent):
                writer.transport.abort()  # no terminator, no [DONE]
                return False
            if due(b.stall_after, sent):
                with contextlib.suppress(TimeoutError):
                    async with asyncio.timeout(b.stall_seconds):
                        while await reader.read(65536):
                            pass  # wait until the client goes away
                return False
            if due(b.malformed_after, sent):
                await send(MALFORMED_EVENT)
                await end_body()
                return True
            if due(b.truncate_after, sent):
                nxt = (content_events[sent:] + tail + [b"data: [DONE]\n\n"])[0]
                writer.write(b"%x\r\n" % len(nxt) + nxt[: len(nxt) // 2])
                await writer.drain()
                writer.close()  # FIN mid-chunk
                return False
            if sent < len(pieces):
                await send(content_events[sent])
        for data in tail:
            await send(data)
        if not b.omit_done:
            await send(b"data: [DONE]\n\n")
        await end_body()
        return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Fake OpenAI chat-completions server")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    args = parser.parse_args(argv)
    fake = FakeOpenAI(args.host, args.port)

    def on_ready() -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, fake._request_stop)
        print(f"FAKE_OPENAI_URL={fake.url}", flush=True)

    asyncio.run(fake._serve(on_ready))
    return 0


if __name__ == "__main__":
    sys.exit(main())
