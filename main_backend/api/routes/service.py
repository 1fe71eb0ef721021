"""Service routes: identity, health (database, migrations, LLM agent), metrics."""

from __future__ import annotations

import sqlalchemy as sa
from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse

from main_backend import __version__
from main_backend.api.deps import MetricsDep
from main_backend.api.schemas import HealthResponse, ServiceInfo

router = APIRouter(tags=["service"])


@router.get("/", response_model=ServiceInfo)
async def service_info() -> ServiceInfo:
    return ServiceInfo(version=__version__)


@router.get("/health", response_model=HealthResponse,
            responses={503: {"model": HealthResponse}})
async def health(request: Request) -> JSONResponse:
    state = request.app.state
    checks = {"database": {"status": "ok"}, "migrations": {"status": "ok"},
              "llm_agent": await state.llm.health()}
    try:
        async with state.db.engine.connect() as conn:
            current = await conn.scalar(sa.text("SELECT version_num FROM alembic_version"))
        if current != state.migration_head:
            checks["migrations"] = {"status": "failing", "current": current,
                                    "head": state.migration_head,
                                    "fix": "run `alembic upgrade head`"}
    except Exception as exc:
        checks["database"] = {"status": "failing", "error": type(exc).__name__}
        checks["migrations"] = {"status": "unknown"}
    ok = all(check.get("status") == "ok" for check in checks.values())
    body = HealthResponse(status="ok" if ok else "degraded", checks=checks)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if ok else 503)


@router.get("/metrics", response_class=Response)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
