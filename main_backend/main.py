"""The uvicorn entry point: `uvicorn main_backend.main:app`.

Settings come from the environment (or `.env`); a broken configuration stops
the process with a sentence naming the setting.
"""

from main_backend.app import create_app
from main_backend.settings import Settings
from stubichat_common.startup import load_settings

app = create_app(load_settings(Settings, "main-backend"))
