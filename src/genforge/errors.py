"""The typed errors every layer raises. Each carries its `code`; the code's HTTP status lives in
api/errors.py only, and the CLI's exit status in cli.py derives from the code too."""

from __future__ import annotations

from typing import Any

# code -> the class that declares it: filled by GenforgeError.__init_subclass__, read by error_class()
BY_CODE: dict[str, type[GenforgeError]] = {}


class GenforgeError(Exception):
    code = "internal_error"
    hint = "This is a bug in genforge; the server log has the details."

    def __init_subclass__(cls, **kwargs: object) -> None:
        """Each code names one class: the first that declares it (a subclass that keeps its parent's code, such
        as ModelNotFound, is still answered as the parent)."""
        super().__init_subclass__(**kwargs)
        BY_CODE.setdefault(cls.code, cls)

    def __init__(
        self,
        message: str,
        *,
        hint: str | None = None,
        content_id: str | None = None,
        field: str | None = None,
        details: dict[str, Any] | None = None,
    ):
        super().__init__(message)
        self.message = message
        if hint is not None:
            self.hint = hint
        self.content_id = content_id
        self.field = field
        self.details = details or {}

    def to_dict(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "code": self.code,
            "message": self.message,
            "hint": self.hint,
            "content_id": self.content_id,
        }
        if self.field:
            body["field"] = self.field
        body.update(self.details)
        return body


class InvalidRequest(GenforgeError):
    code, hint = "invalid_request", "Fix the named field and send the request again."


class MethodNotAllowed(GenforgeError):
    code, hint = "method_not_allowed", "See GET /openapi.json for the methods each path accepts."


class UnsupportedMediaType(GenforgeError):
    code, hint = "unsupported_media_type", "Send the body as JSON with Content-Type: application/json."


class PayloadTooLarge(GenforgeError):
    code = "payload_too_large"
    hint = "Send a smaller body, or raise GENFORGE_MAX_BODY_BYTES."


class NotFound(GenforgeError):
    code, hint = "not_found", "List what exists with GET /api/v1/content or `genforge content list`."


class ModelNotFound(NotFound):
    hint = "See the installed models with `genforge models list`, or add one with `genforge models add PATH`."


class ModelUnavailable(GenforgeError):
    code = "model_unavailable"
    hint = "Install the model with `genforge models pull smollm2-135m-instruct`."


class ModelUnconvertible(ModelUnavailable):
    """The OpenVINO image engine cannot convert this checkpoint (the torch engine may still run it)."""

    code = "model_unconvertible"


class EngineFailed(GenforgeError):
    code = "engine_failed"
    hint = "The engine crashed or failed; it has been restarted. Try again, and check the server log."


class InvalidOutput(GenforgeError):
    code = "invalid_output"
    hint = "The model produced unusable output. Try again with another seed, prompt or model."


class OffSchema(InvalidOutput):
    """An answer that is cut, unparsable or off its JSON schema, or a tool call of an unknown function or with
    arguments off its parameters. Its code stays invalid_output; the service retries it with the next seed, as it
    does a policy violation."""

    hint = (
        "Every attempt gave an answer that does not match its schema; raise max_tokens, simplify the schema, or "
        "raise GENFORGE_POLICY_ATTEMPTS."
    )


class PolicyViolation(InvalidOutput):
    code = "policy_violation"
    hint = (
        "Every attempt broke the policy (a persona's forbidden phrase, a platform's character limit); change the "
        "prompt or the persona, or raise GENFORGE_POLICY_ATTEMPTS."
    )


class GenerationTimeout(GenforgeError):
    code = "generation_timeout"
    hint = "Ask for fewer tokens, or raise GENFORGE_GENERATION_TIMEOUT_S."


class Cancelled(GenforgeError):
    code, hint = "cancelled", "The generation was cancelled before it finished."


class Conflict(GenforgeError):
    code, hint = "conflict", "The content is no longer in a state where this is possible."


class QueueFull(GenforgeError):
    code = "queue_full"
    hint = "The server is busy; retry after the number of seconds in Retry-After, or raise GENFORGE_QUEUE_SIZE."


class StorageFailed(GenforgeError):
    code = "storage_failed"
    hint = "Check free space and permissions of GENFORGE_DATA_DIR."


class Interrupted(GenforgeError):
    code, hint = "interrupted", "Submit the request again."


class ShuttingDown(GenforgeError):
    code = "shutting_down"
    hint = "The server is stopping; retry after Retry-After seconds (on its next start)."


class DatabaseUnavailable(GenforgeError):
    code = "database_unavailable"
    hint = "The database is locked or cannot be written (another process, a full disk); retry after Retry-After."


class BrokerUnavailable(GenforgeError):
    code = "broker_unavailable"
    hint = "The job broker (Redis, GENFORGE_BROKER_URL) cannot be reached; start it and retry after Retry-After."


class ArtifactLost(NotFound):
    code = "artifact_lost"
    hint = "The file was removed outside genforge (the record keeps its sha256); `genforge audit --mark` marks it."


class ArtifactChanged(GenforgeError):
    code = "artifact_changed"
    hint = "The file was changed outside genforge and is not served; `genforge audit --mark` marks such records."


class ArtifactOutsideStore(GenforgeError):
    code = "artifact_outside_store"
    hint = (
        "The record's artifact path leads outside the artifact directory (a crafted or damaged database, e.g. from "
        "a backup): the file is never served, hashed or deleted. `genforge audit --mark` marks such records."
    )


class AlreadyRunning(GenforgeError):
    code = "already_running"
    hint = "Stop the other genforge server on this data directory, or give this one its own GENFORGE_DATA_DIR."


class Unauthorized(GenforgeError):
    code = "unauthorized"
    hint = "Send `Authorization: Bearer KEY` with a key from `genforge keys create`."


class Forbidden(GenforgeError):
    code = "forbidden"
    hint = "Use a key whose scope and models allow this (see `genforge keys list`)."


class RateLimited(GenforgeError):
    code = "rate_limited"
    hint = "This key's request rate is used up; retry after the number of seconds in Retry-After."


class TooManyJobs(GenforgeError):
    code = "too_many_jobs"
    hint = "This key has as many jobs running as it may; retry when one has finished."


class HostNotAllowed(GenforgeError):
    code = "host_not_allowed"
    hint = "Connect by a name in GENFORGE_ALLOWED_HOSTS (loopback names and IP addresses are always allowed)."


class CrossOrigin(GenforgeError):
    code = "cross_origin"
    hint = "A web page of another origin may not change anything here; allow it with GENFORGE_CORS_ORIGINS."


class ModelIntegrityFailed(GenforgeError):
    code = "model_integrity_failed"
    hint = "The downloaded file is not the published one; it was deleted. Pull it again."


class CredentialsFailed(GenforgeError):
    code = "credentials_failed"
    hint = (
        "Content Credentials could not be signed: check GENFORGE_DATA_DIR/credentials (remove it to make a new "
        "key), or set GENFORGE_CREDENTIALS=off to generate without them."
    )


BY_CODE.setdefault(GenforgeError.code, GenforgeError)


class PublishFailed(GenforgeError):
    code = "publish_failed"
    hint = (
        "The network could not be reached or refused the post; check the channel (URL, handle, app password) and "
        "publish again (the same publication is retried, never posted twice)."
    )


class PublishMismatch(PublishFailed):
    code = "publish_mismatch"
    hint = (
        "The network shows something other than what genforge made (text or image); look at the post there "
        "before publishing again."
    )


def error_class(code: str) -> type[GenforgeError]:
    """The class of an error code (for errors that crossed a process boundary as their code, or were stored as
    one); an unknown code is an internal error."""
    return BY_CODE.get(code, GenforgeError)
