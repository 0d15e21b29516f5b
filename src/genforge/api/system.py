"""Health, readiness and metrics."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from genforge import __version__
from genforge.api.auth import RESPONSES, authenticate_metrics
from genforge.api.deps import RuntimeDep
from genforge.runtime import Readiness

router = APIRouter(tags=["system"])


class Health(BaseModel):
    status: str
    version: str


@router.get("/healthz", response_model=Health)
async def healthz() -> Health:  # on the event loop, not the thread pool: it answers while every thread is busy
    return Health(status="ok", version=__version__)


@router.get(
    "/readyz",
    response_model=Readiness,
    responses={503: {"model": Readiness, "description": "Not ready: the failing checks say why."}},
)
def readyz(runtime: RuntimeDep):
    report = runtime.readiness()
    return JSONResponse(report.model_dump(mode="json"), status_code=200 if report.ready else 503)


@router.get(
    "/metrics",
    response_class=Response,
    dependencies=[Depends(authenticate_metrics)],
    responses={
        **RESPONSES,
        200: {"description": "Prometheus metrics.", "content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}},
    },
)
def metrics():
    return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)
