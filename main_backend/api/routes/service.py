"""Service routes: identity, health (database, migrations, LLM agent), metrics."""

from __future__ import annotations

from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse

from main_backend import __version__
from main_backend.api.deps import HealthDep, MetricsDep, ShutdownDep
from main_backend.api.schemas import HealthResponse, ServiceInfo

router = APIRouter(tags=["service"])


@router.get("/", response_model=ServiceInfo)
async def service_info() -> ServiceInfo:
    return ServiceInfo(version=__version__)


@router.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
async def health(health: HealthDep, shutdown: ShutdownDep) -> JSONResponse:
    """Database, migrations and LLM agent; answers within ~3 s whatever they do. 503
    `draining` from the moment the process is shutting down, so no new work comes."""
    checks = await health.run()
    ok = all(check.get("status") == "ok" for check in checks.values())
    status = "draining" if shutdown.draining else "ok" if ok else "degraded"
    body = HealthResponse(status=status, checks=checks)
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if status == "ok" else 503)


@router.get("/metrics", response_class=Response)
async def metrics(metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
