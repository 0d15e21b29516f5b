"""The one place where errors become HTTP responses (DESIGN.md, 'HTTP error mapping')."""

from __future__ import annotations

import logging

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from starlette.exceptions import HTTPException as StarletteHTTPException

from genforge.errors import GenforgeError, InvalidRequest, ModelNotFound, NotFound, PayloadTooLarge

log = logging.getLogger("genforge.api")


class ErrorDetail(BaseModel):
    code: str
    message: str
    hint: str | None
    content_id: str | None


class ErrorBody(BaseModel):
    """The one error shape (under /v1 OpenAI's: OpenAIErrorBody)."""

    error: ErrorDetail


class OpenAIErrorDetail(BaseModel):
    message: str
    type: str
    param: str | None
    code: str
    hint: str | None = None
    content_id: str | None = None


class OpenAIErrorBody(BaseModel):
    """Errors under /v1, in OpenAI's shape."""

    error: OpenAIErrorDetail


def openai_error_body(exc: GenforgeError) -> dict:
    """OpenAI's error object: {"error": {"message", "type", "param", "code"}}."""
    kind = "invalid_request_error" if exc.status < 500 else "server_error"
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


def error_response(exc: GenforgeError, request: Request | None = None) -> JSONResponse:
    """Our error shape, or OpenAI's under /v1 (where invalid requests are 400, as OpenAI answers)."""
    headers = {"Retry-After": str(exc.details["retry_after"])} if "retry_after" in exc.details else {}
    if exc.content_id:
        headers["X-Genforge-Content-Id"] = exc.content_id
    if exc.status == 401:
        headers["WWW-Authenticate"] = 'Bearer realm="genforge"'
    if request is not None and request.url.path.startswith("/v1/"):
        status = 400 if exc.status == 422 else exc.status
        return JSONResponse(openai_error_body(exc), status_code=status, headers=headers)
    return JSONResponse({"error": exc.to_dict()}, status_code=exc.status, headers=headers)


def _validation_error(exc: RequestValidationError) -> InvalidRequest:
    err = exc.errors()[0]
    loc = [str(p) for p in err.get("loc", ()) if p != "body"]
    if err.get("type") == "json_invalid":
        return InvalidRequest(
            f"the body is not valid JSON: {err.get('ctx', {}).get('error', err['msg'])}",
            field="body",
            hint="Send a JSON object with Content-Type: application/json.",
        )
    field = ".".join(loc) or "body"
    return InvalidRequest(f"{field}: {err['msg'].removeprefix('Value error, ')}", field=field)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(GenforgeError)
    async def _genforge(request: Request, exc: GenforgeError):
        return error_response(exc, request)

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        return error_response(_validation_error(exc), request)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        return error_response(_http_error(exc), request)

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception):
        log.exception("unhandled error")
        return error_response(GenforgeError(f"internal error: {type(exc).__name__}"), request)


def _http_error(exc: StarletteHTTPException) -> GenforgeError:
    if exc.status_code == 404:
        return NotFound(str(exc.detail) if exc.detail != "Not Found" else "no such path")
    if exc.status_code == 413:
        return PayloadTooLarge(str(exc.detail))
    if exc.status_code == 400:  # FastAPI could not decode the body (e.g. bytes that are not UTF-8)
        return InvalidRequest(
            f"the body could not be read: {exc.detail}", field="body", hint="Send UTF-8 encoded JSON."
        )
    if 400 <= exc.status_code < 500:
        err = InvalidRequest(str(exc.detail))
        err.status = exc.status_code
        return err
    return GenforgeError(str(exc.detail))


class BodySizeLimit:
    """Refuse bodies over the configured size with 413 before they are read into memory."""

    def __init__(self, app, max_bytes: int):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            return await error_response(self._too_large())(scope, receive, send)
        seen = 0

        async def limited_receive():
            nonlocal seen
            message = await receive()
            seen += len(message.get("body", b""))
            if seen > self.max_bytes:  # FastAPI passes HTTPExceptions from body reading through
                raise StarletteHTTPException(413, self._too_large().message)
            return message

        return await self.app(scope, limited_receive, send)

    def _too_large(self) -> PayloadTooLarge:
        return PayloadTooLarge(f"the body is larger than the limit of {self.max_bytes} bytes")
