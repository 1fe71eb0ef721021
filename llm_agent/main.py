"""The uvicorn entry point: `uvicorn llm_agent.main:app`.

Settings come from the environment (or `.env`); a broken configuration stops
the process with a sentence naming the setting.
"""

from llm_agent.app import create_app
from llm_agent.settings import Settings
from stubichat_common.startup import load_settings

app = create_app(load_settings(Settings, "llm-agent"))
