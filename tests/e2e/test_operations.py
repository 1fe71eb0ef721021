"""Operating the services: a graceful stop, and refusing a broken configuration."""

from __future__ import annotations

import signal
import subprocess
import sys

import httpx
import pytest

from tests.e2e.conftest import Backends, FakeUpstream
from tests.support.servers import REPO_ROOT
from tests.support.sse import parse_sse

pytestmark = pytest.mark.e2e


def test_sigterm_lets_a_stream_in_flight_finish(backends: Backends, upstream: FakeUpstream) -> None:
    chunks = [f"part{i} " for i in range(8)]
    upstream.script({"chunks": chunks, "chunk_delay": 0.25})
    backend = backends.start(SHUTDOWN_GRACE_SECONDS="10")
    text = ""
    with httpx.stream(
        "POST",
        backend.url + "/chat/stream",
        timeout=30,
        json={"messages": [{"role": "user", "content": "Keep going"}]},
    ) as response:
        for line in response.iter_lines():
            text += line + "\n"
            if line == "event: delta" and text.count("event: delta") == 1:
                backend.process.send_signal(signal.SIGTERM)
    events = parse_sse(text)
    assert events[-1].event == "run.completed"
    assert events[-1].data["message"]["content"] == "".join(chunks)
    # uvicorn re-raises the SIGTERM once it has shut down cleanly.
    assert backend.process.wait(timeout=30) in (0, -signal.SIGTERM)
    assert "Application shutdown complete" in backend.output()


@pytest.mark.parametrize(
    ("app", "env", "sentence"),
    [
        ("main_backend.main:app", {"AUTH_MODE": "jwt", "SECRET_KEY": "short"}, "SECRET_KEY"),
        ("main_backend.main:app", {"DATABASE_URL": "mysql://db/chat"}, "DATABASE_URL"),
        ("main_backend.main:app", {"CORS_ORIGINS": "app.example.com/path"}, "CORS_ORIGINS"),
        ("llm_agent.main:app", {"LLM_PROVIDER": "magic"}, "LLM_PROVIDER"),
        ("llm_agent.main:app", {"LLM_PROVIDER": "openai"}, "OPENAI_API_KEY"),
    ],
)
def test_a_broken_configuration_stops_the_process_with_a_clear_sentence(
    app: str, env: dict[str, str], sentence: str
) -> None:
    import os

    clean = {
        k: v for k, v in os.environ.items() if k not in {"OPENAI_API_KEY", "OPENAI_BASE_URL", *env}
    }
    result = subprocess.run(
        [sys.executable, "-m", "uvicorn", app, "--port", "0"],
        cwd=REPO_ROOT,
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "configuration error" in result.stderr and sentence in result.stderr
    assert "Traceback" not in result.stderr


def test_json_logs_carry_request_thread_and_run_ids(
    backends: Backends, upstream: FakeUpstream
) -> None:
    import json

    backend = backends.start(LOG_JSON="true")
    answer = httpx.post(
        backend.url + "/chat/",
        timeout=30,
        headers={"X-Request-ID": "ops-1"},
        json={"messages": [{"role": "user", "content": "log me"}]},
    ).json()
    backend.stop()
    records = [json.loads(line) for line in backend.output().splitlines() if line.strip()]
    extras = [r["record"]["extra"] for r in records]
    assert any(
        e.get("path") == "/chat/"
        and e.get("request_id") == "ops-1"
        and e.get("status") == 200
        and isinstance(e.get("latency_ms"), float)
        for e in extras
    )
    run_lines = [e for e in extras if e.get("run_id") == answer["run_id"]]
    assert run_lines and all(e["thread_id"] == answer["thread_id"] for e in run_lines)
    assert all(e.get("request_id") == "ops-1" for e in run_lines)
