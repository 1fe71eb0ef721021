"""`scripts/start` refuses ports that another program holds, before installing anything."""

from __future__ import annotations

import os
import socket
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.servers import REPO_ROOT, free_port


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        yield sock.getsockname()[1]


def start(tmp_path: Path, **env: str) -> subprocess.CompletedProcess[str]:
    # If the check were missing, the script would go on to install and start the
    # services: keep their database out of the repository, and bound the wait.
    full_env = {
        **os.environ,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'start.db'}",
        "HOST": "127.0.0.1",
        **env,
    }
    return subprocess.run(
        [str(REPO_ROOT / "scripts" / "start")],
        env=full_env,
        capture_output=True,
        text=True,
        timeout=100,
    )


@pytest.mark.parametrize("setting", ["BACKEND_PORT", "LLM_AGENT_PORT"])
def test_a_taken_port_is_named_before_anything_starts(
    tmp_path: Path, taken_port: int, setting: str
) -> None:
    other = "LLM_AGENT_PORT" if setting == "BACKEND_PORT" else "BACKEND_PORT"
    result = start(tmp_path, **{setting: str(taken_port), other: str(free_port())})
    assert result.returncode != 0
    assert result.stderr.strip().splitlines()[-1] == (
        f"scripts/start: port {taken_port} ({setting}) on 127.0.0.1 is already in use by "
        f"another program (Address already in use); stop it or choose another port, for "
        f"example {setting}={taken_port + 10} scripts/start"
    )
    assert "listening on" not in result.stdout
    assert "==> installing" not in result.stdout  # refused before the slow part


def test_one_port_for_both_services_is_refused(tmp_path: Path) -> None:
    port = str(free_port())
    result = start(tmp_path, BACKEND_PORT=port, LLM_AGENT_PORT=port)
    assert result.returncode != 0
    assert f"BACKEND_PORT and LLM_AGENT_PORT are both {port}" in result.stderr
