from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from genforge.api.deps import service
from genforge.schemas import GenerateRequest
from genforge.service import ContentService

router = APIRouter(prefix="/api/v1/content", tags=["content"])
Service = Annotated[ContentService, Depends(service)]


@router.post("/generate", status_code=201)
async def generate(body: GenerateRequest, svc: Service) -> dict:
    return await run_in_threadpool(svc.generate, body)


@router.get("")
def list_content(svc: Service, content_type: Literal["text", "image", "speech"] | None = None,
                 status: Literal["pending", "running", "succeeded", "failed", "cancelled"] | None = None,
                 limit: int = Query(50, ge=1, le=500), offset: int = Query(0, ge=0)) -> dict:
    return svc.list(content_type, status, limit, offset)


@router.get("/{content_id}")
def get_content(content_id: str, svc: Service) -> dict:
    return svc.get(content_id)


@router.get("/{content_id}/file")
def get_file(content_id: str, svc: Service) -> FileResponse:
    path, media_type = svc.artifact(content_id)
    return FileResponse(path, media_type=media_type, filename=f"{content_id}{path.suffix}")


@router.delete("/{content_id}", status_code=204)
def delete_content(content_id: str, svc: Service) -> Response:
    svc.delete(content_id)
    return Response(status_code=204)
