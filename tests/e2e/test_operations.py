"""Operating the services: refusing a broken configuration, JSON logs (a graceful stop is
in test_shutdown.py)."""

from __future__ import annotations

import subprocess
import sys

import httpx
import pytest

from tests.e2e.conftest import Backends, FakeUpstream
from tests.support.servers import REPO_ROOT

pytestmark = pytest.mark.e2e


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
