"""The uvicorn entry point: `uvicorn main_backend.main:app` (settings from the environment)."""

from main_backend.app import create_app

app = create_app()
