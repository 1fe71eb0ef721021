"""Service routes: identity, health, models, metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Request, Response
from fastapi.responses import JSONResponse

from llm_agent import __version__
from llm_agent.api.deps import GeneratorDep, MetricsDep, SettingsDep, require_token
from llm_agent.api.schemas import HealthResponse, ModelsResponse, ServiceInfo

router = APIRouter()


@router.get("/", response_model=ServiceInfo)
async def service_info(settings: SettingsDep, generator: GeneratorDep) -> ServiceInfo:
    return ServiceInfo(
        version=__version__,
        provider=generator.provider.name,
        default_model=settings.default_model,
    )


@router.get("/health", response_model=HealthResponse, responses={503: {"model": HealthResponse}})
async def health(generator: GeneratorDep) -> JSONResponse:
    provider = generator.provider
    state = provider.health()
    body = HealthResponse(
        status="ok" if state.usable else "degraded",
        provider=provider.name,
        checks={
            "provider": {
                "status": "ok" if state.usable else "failing",
                "name": provider.name,
                **state.detail,
            }
        },
    )
    return JSONResponse(body.model_dump(), status_code=200 if state.usable else 503)


@router.get("/models", response_model=ModelsResponse, dependencies=[Depends(require_token)])
async def models(settings: SettingsDep) -> ModelsResponse:
    return ModelsResponse(default=settings.default_model, models=settings.allowed_models)


@router.get("/metrics", response_class=Response)
async def metrics(request: Request, metrics: MetricsDep) -> Response:
    return Response(metrics.render(), media_type="text/plain; version=0.0.4; charset=utf-8")
