"""env.example lists every setting of both services, each with a comment, and only those."""

from __future__ import annotations

import pytest

from llm_agent.settings import Settings as AgentSettings
from main_backend.settings import Settings as BackendSettings
from tests.support.servers import REPO_ROOT


def test_env_example_matches_the_settings() -> None:
    lines = (REPO_ROOT / "env.example").read_text().splitlines()
    names = []
    for index, line in enumerate(lines):
        if line and not line.startswith("#"):
            name = line.split("=", 1)[0]
            names.append(name)
            assert lines[index - 1].startswith("# "), f"{name} has no comment above it"
    settings = {n.upper() for n in (*AgentSettings.model_fields, *BackendSettings.model_fields)}
    assert sorted(set(names)) == sorted(names), "a setting is listed twice"
    assert set(names) == settings


def test_the_example_values_are_valid_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    for line in (REPO_ROOT / "env.example").read_text().splitlines():
        if line and not line.startswith("#"):
            name, value = line.split("=", 1)
            monkeypatch.setenv(name, value)
    agent, backend = AgentSettings(_env_file=None), BackendSettings(_env_file=None)
    assert agent.provider_name == "echo"
    assert backend.replica_id and backend.cors_origins == []
    assert backend.system_prompt is None and backend.secret_key is None
