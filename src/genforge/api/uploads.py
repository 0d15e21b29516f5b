"""Uploads: pictures a key brings as inputs of image requests, and audio to transcribe (multipart, field `file`)."""

from __future__ import annotations

from fastapi import APIRouter, File, Response, UploadFile
from starlette.concurrency import run_in_threadpool

from genforge.api.deps import CallerDep, ServiceDep
from genforge.api.errors import COMMON, error_responses
from genforge.core.uploads import Upload
from genforge.errors import PayloadTooLarge

router = APIRouter(prefix="/api/v1/uploads", tags=["uploads"])


async def read_limited(file: UploadFile, limit: int) -> bytes:
    """The uploaded file's bytes, refused (413) past `limit` without reading further."""
    data = await file.read(limit + 1)
    if len(data) > limit:
        raise PayloadTooLarge(
            f"file: the upload is over the limit of {limit} bytes",
            hint="Send a smaller picture, or raise GENFORGE_UPLOAD_MAX_BYTES.",
        )
    return data


@router.post("", status_code=201, response_model=Upload, responses=error_responses(413, *COMMON))
async def create_upload(service: ServiceDep, caller: CallerDep, file: UploadFile = File(...)) -> Upload:  # noqa: B008
    """A PNG, JPEG or WebP picture, decoded and stored re-encoded as PNG (EXIF stripped): its id works as
    params.init_image, params.mask or a persona's reference_images. Or audio to transcribe (a file named .wav,
    .mp3, .ogg, .flac, .m4a, ...): its id is a transcript's params.upload."""
    data = await read_limited(file, service.uploads.max_bytes)
    return await run_in_threadpool(service.uploads.create, data, caller, file.filename)


@router.get("/{upload_id}", response_model=Upload, responses=error_responses(404, *COMMON))
def get_upload(upload_id: str, service: ServiceDep, caller: CallerDep) -> Upload:
    return service.uploads.get(upload_id, caller)


@router.delete(
    "/{upload_id}",
    status_code=204,
    response_class=Response,
    responses={204: {"description": "Deleted."}, **error_responses(404, *COMMON)},
)
def delete_upload(upload_id: str, service: ServiceDep, caller: CallerDep) -> Response:
    service.uploads.delete(upload_id, caller)
    return Response(status_code=204)
