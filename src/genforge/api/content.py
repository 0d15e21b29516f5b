"""The native content API: generate, follow, list, read, cancel and delete records."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

from fastapi import APIRouter, Depends, File, Query, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse
from pydantic import BaseModel, Field

from genforge.api.deps import CallerDep, ServiceDep
from genforge.api.errors import COMMON, GENERATION, error_responses
from genforge.api.streaming import SSE_DOC, event_stream, final_event, generate_sync, native_events
from genforge.contenttypes import REGISTRY, ContentRecord
from genforge.contenttypes.records import Status
from genforge.contenttypes.request import ContentType, GenerateRequest
from genforge.core.records import ArtifactCheck, ContentPage
from genforge.errors import GenforgeError, InvalidRequest, NotFound
from genforge.platform import variants
from genforge.platform.variants import Batch


def _no_nul_in_id(request: Request) -> None:
    """No id genforge makes has a NUL in it, and PostgreSQL cannot even compare one: it is unknown, as any."""
    content_id = request.path_params.get("content_id")
    if content_id is not None and "\x00" in content_id:
        raise NotFound(f"no content with id {content_id!r}", field="id")


router = APIRouter(prefix="/api/v1/content", tags=["content"], dependencies=[Depends(_no_nul_in_id)])
OFFSET_LIMIT = 10**9

# The record's id leads to the routes that take it (OpenAPI links: clients and stateful fuzzers follow them).
RECORD_LINKS = {
    name: {"operationId": op, "parameters": {"content_id": "$response.body#/id"}}
    for name, op in (
        ("GetRecord", "get_content"),
        ("FollowEvents", "content_events"),
        ("GetFile", "get_file"),
        ("Cancel", "cancel_content"),
        ("Delete", "delete_content"),
    )
}


@router.post(
    "/generate",
    status_code=201,
    response_model=ContentRecord | Batch,
    responses={
        201: {
            "description": "The succeeded record (sync), or with stream: true a text/event-stream of `token` and "
            "`progress` events ending with exactly one `done` (the record) or `failed` (the failed record). With "
            "`variants`: {batch_id, items: [record, ...]} (see GET /api/v1/batches/{batch_id}).",
            "content": SSE_DOC,
            "links": RECORD_LINKS,
        },
        202: {
            "description": "mode: async: the pending record; follow its Location.",
            "model": ContentRecord,
            "links": RECORD_LINKS,
        },
        **error_responses(*GENERATION),
    },
)
async def generate(body: GenerateRequest, svc: ServiceDep, caller: CallerDep):
    if body.variants is not None:  # n records under one batch id: {"batch_id", "items"}
        batch_id, jobs = await run_in_threadpool(variants.submit, svc, body, caller)
        first_error = None
        for job in jobs:  # awaited on the loop: no pool thread held while the variants run
            try:
                await job.outcome()
            except GenforgeError as exc:
                first_error = first_error or exc
        batch = await run_in_threadpool(variants.finish, svc, batch_id, first_error, caller)
        return JSONResponse(batch.model_dump(mode="json"), status_code=201)
    if body.mode == "async" and body.stream:
        raise InvalidRequest(
            "stream: an async request answers 202 at once; follow its events at GET /api/v1/content/{id}/events, "
            "or send mode: sync to stream",
            field="stream",
        )
    if body.mode == "sync" and not body.stream:
        return await generate_sync(svc, body, caller)
    job = await run_in_threadpool(svc.submit, body, caller)
    if body.mode == "async":
        record = await run_in_threadpool(svc.get, job.content_id, caller)
        return JSONResponse(
            record.model_dump(mode="json"), status_code=202, headers={"Location": f"/api/v1/content/{job.content_id}"}
        )
    return event_stream(native_events(svc, job, caller, cancel_on_disconnect=True), job.content_id, status=201)


@router.get("", response_model=ContentPage, responses=error_responses(*COMMON))
def list_content(
    svc: ServiceDep,
    caller: CallerDep,
    content_type: ContentType | None = None,
    status: Status | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=OFFSET_LIMIT),
    q: str | None = Query(
        None, max_length=500, description='Full-text search over prompt and text: words, "phrases", prefix*.'
    ),
    model: str | None = Query(None, max_length=200),
    created_after: datetime | None = None,
    created_before: datetime | None = None,
) -> ContentPage:
    dates = {"created_after": created_after, "created_before": created_before}
    return svc.list(caller, content_type, status, limit, offset, q=q, model=model, **dates)


@router.get("/{content_id}", response_model=ContentRecord, responses=error_responses(404, *COMMON))
def get_content(content_id: str, svc: ServiceDep, caller: CallerDep) -> ContentRecord:
    return svc.get(content_id, caller)


@router.get(
    "/{content_id}/events",
    response_class=Response,
    responses={
        200: {"description": "The job's events from its start, then its final event.", "content": SSE_DOC},
        **error_responses(404, *COMMON),
    },
)
async def content_events(content_id: str, svc: ServiceDep, caller: CallerDep):
    """Follow a job's events; a finished one answers with its final event alone."""
    record = await run_in_threadpool(svc.get, content_id, caller)  # 404 when unknown (or another key's)
    job = svc.runner.get(content_id)

    async def finished():
        yield final_event(record)

    if job is None:
        return event_stream(finished())
    return event_stream(native_events(svc, job, caller, cancel_on_disconnect=False))


@router.post("/{content_id}/cancel", response_model=ContentRecord, responses=error_responses(404, 409, *COMMON))
async def cancel_content(content_id: str, svc: ServiceDep, caller: CallerDep):
    return await run_in_threadpool(svc.cancel, content_id, caller)


@router.post("/{content_id}/verify", response_model=ArtifactCheck, responses=error_responses(404, 409, *COMMON))
def verify_content(content_id: str, svc: ServiceDep, caller: CallerDep) -> ArtifactCheck:
    """Re-hash the record's file: is it still the one recorded?"""
    return svc.verify(content_id, caller)


@router.get(
    "/{content_id}/file",
    response_class=FileResponse,
    responses={
        200: {
            "description": "The artifact's bytes.",
            "content": {
                spec.media_type: {"schema": {"type": "string", "format": "binary"}} for spec in REGISTRY.values()
            },
        },
        **error_responses(404, 409, *COMMON),
    },
)
def get_file(content_id: str, svc: ServiceDep, caller: CallerDep) -> FileResponse:
    path, media_type = svc.artifact(content_id, caller)
    return FileResponse(path, media_type=media_type, filename=f"{content_id}{path.suffix}")


@router.get(
    "/{content_id}/credentials",
    responses={
        200: {"description": "The manifest read back from the file and checked now, or a text's signed sidecar."},
        **error_responses(404, 409, *COMMON),
    },
)
def get_credentials(content_id: str, svc: ServiceDep, caller: CallerDep) -> dict:
    """The Content Credentials: the manifest embedded in an image or speech file (as read back and checked
    now), or the signed sidecar of a text."""
    return svc.credentials_of(content_id, caller)


@router.delete(
    "/{content_id}",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "Deleted, with its file."}, **error_responses(404, *COMMON)},
)
def delete_content(content_id: str, svc: ServiceDep, caller: CallerDep) -> Response:
    svc.delete(content_id, caller)
    return Response(status_code=204)


# --- uploads: audio to transcribe ------------------------------------------------------------------------------
uploads_router = APIRouter(prefix="/api/v1/uploads", tags=["content"])


class Upload(BaseModel):
    upload: str = Field(description="The upload's id: send it as a transcript's params.upload.")
    size_bytes: int


@uploads_router.post("", status_code=201, response_model=Upload, responses=error_responses(*COMMON))
async def upload_audio(
    svc: ServiceDep,
    caller: CallerDep,
    file: Annotated[UploadFile, File(description="Audio to transcribe: WAV, MP3, OGG, FLAC, M4A.")],
) -> Upload:
    """Store an audio file for this key; a transcript request names it (`params.upload`). Another key's upload
    answers as an unknown one."""
    data = await file.read()
    upload = await run_in_threadpool(svc.upload, data, file.filename or "audio.wav", caller)
    return Upload(upload=upload, size_bytes=len(data))
