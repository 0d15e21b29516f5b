from __future__ import annotations

from typing import Annotated, Literal

from fastapi import APIRouter, Depends, Query, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse

from genforge.api.deps import service
from genforge.api.sse import final_event, job_events
from genforge.schemas import GenerateRequest
from genforge.service import ContentService

router = APIRouter(prefix="/api/v1/content", tags=["content"])
Service = Annotated[ContentService, Depends(service)]
SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}


@router.post("/generate", status_code=201)
async def generate(body: GenerateRequest, svc: Service):
    if body.mode == "sync" and not body.stream:
        return await run_in_threadpool(svc.generate, body)
    job = await run_in_threadpool(svc.submit, body)
    if body.mode == "async":
        record = await run_in_threadpool(svc.get, job.content_id)
        return JSONResponse(record, status_code=202, headers={"Location": f"/api/v1/content/{job.content_id}"})
    return StreamingResponse(
        job_events(svc, job, cancel_on_disconnect=True),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, "X-Genforge-Content-Id": job.content_id},
    )


@router.get("")
def list_content(
    svc: Service,
    content_type: Literal["text", "image", "speech"] | None = None,
    status: Literal["pending", "running", "succeeded", "failed", "cancelled"] | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
) -> dict:
    return svc.list(content_type, status, limit, offset)


@router.get("/{content_id}")
def get_content(content_id: str, svc: Service) -> dict:
    return svc.get(content_id)


@router.get("/{content_id}/events")
async def content_events(content_id: str, svc: Service) -> StreamingResponse:
    """Follow a job's events; a finished one answers with its final event alone."""
    record = await run_in_threadpool(svc.get, content_id)  # 404 when unknown
    job = svc.runner.get(content_id)

    async def finished():
        yield final_event(record)

    stream = job_events(svc, job, cancel_on_disconnect=False) if job is not None else finished()
    return StreamingResponse(stream, media_type="text/event-stream", headers=SSE_HEADERS)


@router.post("/{content_id}/cancel")
async def cancel_content(content_id: str, svc: Service) -> dict:
    return await run_in_threadpool(svc.cancel, content_id)


@router.get("/{content_id}/file")
def get_file(content_id: str, svc: Service) -> FileResponse:
    path, media_type = svc.artifact(content_id)
    return FileResponse(path, media_type=media_type, filename=f"{content_id}{path.suffix}")


@router.get("/{content_id}/credentials")
def get_credentials(content_id: str, svc: Service) -> dict:
    """The Content Credentials: the manifest embedded in an image or speech file (as read back and checked
    now), or the signed sidecar of a text."""
    return svc.credentials_of(content_id)


@router.delete("/{content_id}", status_code=204)
def delete_content(content_id: str, svc: Service) -> Response:
    svc.delete(content_id)
    return Response(status_code=204)
