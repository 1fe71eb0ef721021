"""The uvicorn entry point: `uvicorn llm_agent.main:app` (settings from the environment)."""

from llm_agent.app import create_app

app = create_app()
