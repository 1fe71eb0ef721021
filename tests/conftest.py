"""Shared test set-up.

The process environment must not leak a developer's or CI's settings into the
apps under test, so every setting name is removed before tests run; tests pass
their settings explicitly.
"""

from __future__ import annotations

import os

from llm_agent.settings import Settings as AgentSettings

for _name in AgentSettings.model_fields:
    os.environ.pop(_name.upper(), None)
