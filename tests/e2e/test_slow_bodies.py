"""A client dribbling its body is cut off with 408 request_timeout, over a real socket
against real uvicorn processes of both services."""

from __future__ import annotations

import json
import select
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from tests.e2e.conftest import Backends
from tests.support.servers import ServiceProcess

BODY_TIMEOUT = 1.0
BODY = b'{"messages": [{"role": "user", "content": "a slow question"}]}'


def dribble(url: str, path: str, body: bytes, every: float = 0.3) -> tuple[bytes, float]:
    """Send the headers, then one body byte every `every` seconds until the server
    answers; return the whole answer (read until the server closes) and how long the
    body was dribbled. Fails if the server holds the connection for 10 s."""
    address = urlsplit(url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as sock:
        sock.sendall(
            f"POST {path} HTTP/1.1\r\nHost: {address.netloc}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n".encode()
        )
        started = time.monotonic()
        sent = 0
        while not select.select([sock], [], [], every)[0]:
            assert time.monotonic() - started < 10, "the server held the slow body for 10 s"
            assert sent < len(body) - 1, "the whole body was sent before any answer"
            sock.sendall(body[sent : sent + 1])
            sent += 1
        dribbled = time.monotonic() - started
        answer = b""
        while chunk := sock.recv(65536):  # ends when the server closes the connection
            answer += chunk
    return answer, dribbled


def assert_request_timeout(answer: bytes, dribbled: float) -> None:
    head, _, body = answer.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.lower().split(": ", 1) for line in header_lines)
    assert status_line.split()[1] == "408", answer
    assert headers["connection"] == "close"
    error = json.loads(body)["error"]
    assert error["code"] == "request_timeout"
    assert error["request_id"] == headers["x-request-id"]
    assert f"{BODY_TIMEOUT:g} seconds" in error["message"]
    assert dribbled >= BODY_TIMEOUT  # the deadline is not cut short


@pytest.fixture
def slow_agent(tmp_path: Path) -> Iterator[ServiceProcess]:
    agent = ServiceProcess(
        "llm_agent.main:app",
        {"LLM_PROVIDER": "echo", "REQUEST_BODY_TIMEOUT_SECONDS": str(BODY_TIMEOUT)},
        tmp_path / "agent.log",
    )
    try:
        agent.wait_ready("/health")
        yield agent
    finally:
        agent.stop()


def test_the_agent_cuts_off_a_dribbled_body(slow_agent: ServiceProcess) -> None:
    answer, dribbled = dribble(slow_agent.url, "/generate/", BODY)
    assert_request_timeout(answer, dribbled)
    log = slow_agent.output()
    assert "POST /generate/ 408" in log, log


def test_the_backend_cuts_off_a_dribbled_body(backends: Backends) -> None:
    backend = backends.start(REQUEST_BODY_TIMEOUT_SECONDS=str(BODY_TIMEOUT))
    answer, dribbled = dribble(backend.url, "/chat/", BODY)
    assert_request_timeout(answer, dribbled)
    # Nothing was appended, and the process serves the next request normally.
    threads = httpx.get(backend.url + "/threads", timeout=10).json()["threads"]
    assert threads == []
