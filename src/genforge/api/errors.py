"""The one place where errors become HTTP responses: the code -> status table, both error shapes (ours and,
under /v1, OpenAI's), and the error responses each route declares in the OpenAPI schema."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from genforge.contenttypes.records import ErrorBody
from genforge.errors import (
    GenforgeError,
    InvalidRequest,
    MethodNotAllowed,
    ModelNotFound,
    NotFound,
    PayloadTooLarge,
    UnsupportedMediaType,
)

log = logging.getLogger("genforge.api")

# Every error code and its HTTP status (README, "Errors"). Codes not listed are 500 (a bug).
STATUS: dict[str, int] = {
    "invalid_request": 422,
    "not_found": 404,
    "method_not_allowed": 405,
    "conflict": 409,
    "cancelled": 409,
    "payload_too_large": 413,
    "unsupported_media_type": 415,
    "queue_full": 429,
    "engine_failed": 502,
    "invalid_output": 502,
    "policy_violation": 502,
    "model_unavailable": 503,
    "broker_unavailable": 503,
    "model_unconvertible": 503,
    "generation_timeout": 504,
    "storage_failed": 507,
    "shutting_down": 503,
    "database_unavailable": 503,
    "artifact_lost": 404,
    "artifact_changed": 409,
    "artifact_outside_store": 409,
    "unauthorized": 401,
    "forbidden": 403,
    "cross_origin": 403,
    "host_not_allowed": 421,
    "rate_limited": 429,
    "too_many_jobs": 429,
    "model_integrity_failed": 502,
    "credentials_failed": 500,
    "publish_failed": 502,  # the network failed or refused (a publication's error; 502 when answered at once)
    "publish_mismatch": 502,  # the live post read back differs from what genforge made
    "internal_error": 500,  # a bug in genforge
    "already_running": 409,  # another server holds the data dir (a start-up error; in the table for completeness)
    "interrupted": 503,  # the server stopped (or lost the worker) while it ran: submit it again
}
OPENAI_PREFIX = "/v1/"


def status_of(exc: GenforgeError) -> int:
    return STATUS.get(exc.code, 500)


# --- OpenAI's error shape (under /v1) ---------------------------------------------------------------
class OpenAIErrorDetail(BaseModel):
    message: str
    type: str = Field(description="invalid_request_error or server_error.")
    param: str | None
    code: str | None
    hint: str | None = None
    content_id: str | None = None


class OpenAIErrorBody(BaseModel):
    error: OpenAIErrorDetail


def openai_error_body(exc: GenforgeError) -> dict:
    """OpenAI's error object: {"error": {"message", "type", "param", "code"}}."""
    kind = "invalid_request_error" if status_of(exc) < 500 else "server_error"
    code = "model_not_found" if isinstance(exc, ModelNotFound) else exc.code
    return {
        "error": {
            "message": exc.message,
            "type": kind,
            "param": exc.field,
            "code": code,
            "hint": exc.hint,
            "content_id": exc.content_id,
        }
    }


def error_response(exc: GenforgeError, path: str = "") -> JSONResponse:
    """Our error shape, or OpenAI's under /v1 (where invalid requests are 400, as OpenAI answers)."""
    headers = {"Retry-After": str(exc.details["retry_after"])} if "retry_after" in exc.details else {}
    if exc.content_id:
        headers["X-Genforge-Content-Id"] = exc.content_id
    status = status_of(exc)
    if status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="genforge"'
    if path.startswith(OPENAI_PREFIX):
        return JSONResponse(openai_error_body(exc), status_code=400 if status == 422 else status, headers=headers)
    return JSONResponse({"error": exc.to_dict()}, status_code=status, headers=headers)


# --- what the schema declares -------------------------------------------------------------------------
_DESCRIPTIONS = {
    400: "Invalid request (OpenAI's status for it).",
    404: "Unknown id or model (`not_found`), or a record whose file is gone (`artifact_lost`).",
    409: "The content is not in a state where this is possible (`conflict`), or its file was changed outside "
    "genforge (`artifact_changed`) or its recorded path leads outside the artifact directory "
    "(`artifact_outside_store`).",
    413: "Body over GENFORGE_MAX_BODY_BYTES (`payload_too_large`).",
    422: "A field is wrong; the message names it (`invalid_request`).",
    429: "The queue is full (`queue_full`); see Retry-After.",
    502: "The engine crashed (`engine_failed`) or produced unusable output (`invalid_output`), or every attempt "
    "broke the policy (`policy_violation`: a forbidden phrase, a character limit).",
    503: "The model is not installed or its file is missing or changed (`model_unavailable`); the database is "
    "locked or cannot be written (`database_unavailable`); the job broker cannot be reached (`broker_unavailable`); "
    "the server is stopping (`shutting_down`).",
    504: "Generation exceeded GENFORGE_GENERATION_TIMEOUT_S (`generation_timeout`).",
    507: "The artifact could not be written (`storage_failed`).",
}


def error_responses(*statuses: int, openai: bool = False) -> dict:
    """`responses=` for a route: each status with the one error schema (OpenAI's under /v1)."""
    model = OpenAIErrorBody if openai else ErrorBody
    return {s: {"model": model, "description": _DESCRIPTIONS[s]} for s in statuses}


# Statuses every route can answer: malformed input, a body over the limit, the database unavailable.
COMMON = (413, 422, 503)
GENERATION = (404, 413, 422, 429, 502, 503, 504, 507)


# --- handlers -----------------------------------------------------------------------------------------
def _validation_error(exc: RequestValidationError) -> InvalidRequest:
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ())]
    if loc and loc[0] in ("body", "query", "path", "header", "cookie"):  # where it was, not what it is
        loc = loc[1:]
    if err.get("type") == "json_invalid":
        return InvalidRequest(
            f"the body is not valid JSON: {err.get('ctx', {}).get('error', err['msg'])}",
            field="body",
            hint="Send a JSON object with Content-Type: application/json.",
        )
    field = ".".join(loc) or "body"
    return InvalidRequest(f"{field}: {err['msg'].removeprefix('Value error, ')}", field=field)


def _http_error(exc: StarletteHTTPException) -> GenforgeError:
    if exc.status_code == 404:
        return NotFound(str(exc.detail) if exc.detail != "Not Found" else "no such path")
    if exc.status_code == 405:
        return MethodNotAllowed(f"method not allowed: {exc.detail}")
    if exc.status_code == 413:
        return PayloadTooLarge(str(exc.detail))
    if exc.status_code == 415:
        return UnsupportedMediaType(str(exc.detail))
    if exc.status_code == 400:  # FastAPI could not decode the body (e.g. bytes that are not UTF-8)
        return InvalidRequest(
            f"the body could not be read: {exc.detail}", field="body", hint="Send UTF-8 encoded JSON."
        )
    if 400 <= exc.status_code < 500:
        return InvalidRequest(str(exc.detail))
    return GenforgeError(str(exc.detail))


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GenforgeError)
    async def _genforge(request: Request, exc: GenforgeError):
        return error_response(exc, request.url.path)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return error_response(_validation_error(exc), request.url.path)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error_response(_http_error(exc), request.url.path)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error")
        return error_response(GenforgeError(f"internal error: {type(exc).__name__}"), request.url.path)


UPLOAD_PATHS = ("/api/v1/uploads", "/v1/images/edits")  # multipart picture uploads
UPLOAD_FORM_OVERHEAD = 1_000_000  # the other form fields (a prompt, a mask) beside the picture


class BodySizeLimit:
    """Refuse bodies over the configured size with 413 before they are read into memory."""

    def __init__(self, app, max_bytes: int, upload_bytes: int = 0):
        self.app = app
        self.max_bytes = max_bytes
        # picture uploads (multipart) may be larger: GENFORGE_UPLOAD_MAX_BYTES and the form's own overhead
        self.upload_bytes = max(max_bytes, upload_bytes + UPLOAD_FORM_OVERHEAD)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        path = scope.get("path", "")
        limit = self.upload_bytes if path.endswith(UPLOAD_PATHS) else self.max_bytes
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > limit:
            return await error_response(self._too_large(limit), path)(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > limit:  # FastAPI passes HTTPExceptions from body reading through
                raise StarletteHTTPException(413, self._too_large(limit).message)
            return message

        return await self.app(scope, limited_receive, send)

    def _too_large(self, limit: int) -> PayloadTooLarge:
        return PayloadTooLarge(f"the body is larger than the limit of {limit} bytes")
