"""The typed errors every layer raises. HTTP statuses are mapped from `status` in api/errors.py only."""

from __future__ import annotations


class GenforgeError(Exception):
    code = "internal_error"
    status = 500
    hint = "This is a bug in genforge; the server log has the details."

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        content_id: str | None = None,
        field: str | None = None,
        details: dict | None = None,
    ):
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint
        self.content_id = content_id
        self.field = field
        self.details = details or {}

    def to_dict(self) -> dict:
        body = {"code": self.code, "message": self.message, "hint": self.hint, "content_id": self.content_id}
        if self.field:
            body["field"] = self.field
        body.update(self.details)
        return body


class InvalidRequest(GenforgeError):
    code, status, hint = "invalid_request", 422, "Fix the named field and send the request again."


class PayloadTooLarge(GenforgeError):
    code, status = "payload_too_large", 413
    hint = "Send a smaller body, or raise GENFORGE_MAX_BODY_BYTES."


class NotFound(GenforgeError):
    code, status, hint = "not_found", 404, "List what exists with GET /api/v1/content or `genforge content list`."


class ModelNotFound(NotFound):
    hint = "See the installed models with `genforge models list`, or add one with `genforge models add PATH`."


class ModelUnavailable(GenforgeError):
    code, status = "model_unavailable", 503
    hint = "Install the model with `genforge models pull smollm2-135m-instruct`."


class EngineFailed(GenforgeError):
    code, status = "engine_failed", 502
    hint = "The engine crashed or failed; it has been restarted. Try again, and check the server log."


class InvalidOutput(GenforgeError):
    code, status = "invalid_output", 502
    hint = "The model produced unusable output. Try again with another seed, prompt or model."


class GenerationTimeout(GenforgeError):
    code, status = "generation_timeout", 504
    hint = "Ask for fewer tokens, or raise GENFORGE_GENERATION_TIMEOUT_S."


class Cancelled(GenforgeError):
    code, status, hint = "cancelled", 409, "The generation was cancelled before it finished."


class Conflict(GenforgeError):
    code, status, hint = "conflict", 409, "The content is no longer in a state where this is possible."


class QueueFull(GenforgeError):
    code, status = "queue_full", 429
    hint = "The server is busy; retry after the number of seconds in Retry-After, or raise GENFORGE_QUEUE_SIZE."


class StorageFailed(GenforgeError):
    code, status = "storage_failed", 507
    hint = "Check free space and permissions of GENFORGE_DATA_DIR."


class ModelIntegrityFailed(GenforgeError):
    code, status = "model_integrity_failed", 502
    hint = "The downloaded file is not the published one; it was deleted. Pull it again."


class CredentialsFailed(GenforgeError):
    code, status = "credentials_failed", 500
    hint = (
        "Content Credentials could not be signed: check GENFORGE_DATA_DIR/credentials (remove it to make a new "
        "key), or set GENFORGE_CREDENTIALS=off to generate without them."
    )
