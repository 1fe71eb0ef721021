"""The uvicorn entry point: `uvicorn main_backend.main:app`.

Only the service identity exists yet; the chat and thread API arrive with the
event store (issue 3) and the turn graph (issue 4).
"""

from fastapi import FastAPI

from main_backend import __version__

app = FastAPI(title="Stubichat main backend", version=__version__, docs_url=None,
              redoc_url=None, openapi_url=None)


@app.get("/")
async def service_info() -> dict[str, str]:
    return {"service": "main-backend", "version": __version__, "status": "ok"}
