"""The content record as clients receive it: common fields here, one typed section per content type in
genforge/contenttypes/. The API declares these as its response models, so /openapi.json documents every key."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, Field, PlainSerializer

from genforge.errors import GenforgeError

# ISO 8601 with its UTC offset (+00:00), as datetime.isoformat() writes it.
Timestamp = Annotated[datetime, PlainSerializer(lambda moment: moment.isoformat(), return_type=str)]
Status = Literal["pending", "running", "succeeded", "failed", "cancelled"]


class ModelInfo(BaseModel):
    name: str | None = Field(description="The model that was asked for (and ran, when it ran).")
    engine: str | None = Field(description="The engine that ran it (llama.cpp, diffusers, portrait, piper, ...).")
    engine_version: str | None = Field(description="The engine's version, as it reported itself.")
    file_sha256: str | None = Field(
        description="sha256 of the model file (or checkpoint directory) that ran; null for a remote model."
    )
    remote: bool = Field(False, description="Served by a remote OpenAI-compatible server (no local file).")
    base_url: str | None = Field(None, description="Remote models: the server's base URL.")
    served_model: str | None = Field(None, description="Remote models: the model id the server was asked for.")
    system_fingerprint: str | None = Field(None, description="Remote models: the server's system_fingerprint.")
    source: dict | None = Field(None, description="Pulled from a hub: its repo, revision (commit) and file.")


class Artifact(BaseModel):
    sha256: str = Field(description="sha256 of the stored file's bytes.")
    size_bytes: int
    media_type: str = Field(description="text/plain, image/png, audio/wav or video/mp4.")
    url: str = Field(description="Where GET serves the file.")


class Timings(BaseModel):
    load_ms: float | None = Field(description="Model loading, when this request had to load it.")
    generate_ms: float | None = Field(description="The engine's work.")
    total_ms: float | None = Field(description="From acceptance to the final record.")


class RecordError(BaseModel):
    code: str = Field(description="Machine-readable error code, e.g. model_unavailable.")
    message: str | None
    hint: str | None = Field(description="What to do about it.")


class Usage(BaseModel):
    prompt_tokens: int | None
    completion_tokens: int | None


class PersonaUse(BaseModel):
    """The persona a record was made with, and what it set (kept even when the persona is deleted)."""

    name: str
    version: int
    applied: dict[str, Any] = Field(
        default_factory=dict, description="The request fields that came from the persona (field -> value)."
    )


class Attempt(BaseModel):
    """A generation that ran but broke the request's policy (a forbidden phrase, a character limit), its schema
    (params.response_format, params.tools), or failed listen-back (what was heard was too far from the text)."""

    seed: int | None
    code: str = Field(
        description="policy_violation, or invalid_output for an answer off its schema or a narration that failed "
        "listen-back."
    )
    message: str = Field(description="What broke: the phrase, limit or schema keyword, or the WER.")
    wer: float | None = Field(None, description="Listen-back: the narration's word error rate.")
    transcript_id: str | None = Field(None, description="Listen-back: the transcript of what was heard.")


class RecordBase(BaseModel):
    """What every record has, whatever its content type."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="The content id (a UUID).")
    content_type: str = Field(description="text, image, speech or video: which section the record has.")
    status: Status = Field(description="succeeded only when real, validated content was stored durably.")
    prompt: str
    system: str | None = Field(None, description="Text: the system prompt, if one was given.")
    quality: str = Field(description="The quality preset that chose the model and the defaults.")
    model: ModelInfo
    artifact: Artifact | None = Field(description="The stored file; null unless the record succeeded.")
    timings: Timings
    created_at: Timestamp
    finished_at: Timestamp | None
    error: RecordError | None = Field(description="Why the record failed or was cancelled; null otherwise.")
    warnings: list[str] = Field(default_factory=list)
    queue_position: int | None = Field(None, description="1-based place in the queue while pending.")
    owner: str | None = Field(None, description="The id of the API key that made it (null without keys).")
    credentials: dict | None = Field(
        None,
        description="Content Credentials (C2PA): signed or not, by which certificate; GET .../credentials reads "
        "them back from the file.",
    )
    persona: PersonaUse | None = Field(None, description="The persona (name, version) the record was made with.")
    attempts: list[Attempt] = Field(
        default_factory=list,
        description="Runs that broke the policy or the schema, each retried with the next seed "
        "(GENFORGE_POLICY_ATTEMPTS).",
    )


R = TypeVar("R", bound=RecordBase)
T = TypeVar("T")


def record_as(record: RecordBase, cls: type[R]) -> R:
    """`record` as the record class of its content type, where the code asked for that type (generated a text,
    an image...): a record of another type there is a bug, raised as one (internal_error)."""
    if not isinstance(record, cls):
        raise GenforgeError(f"content {record.id} is a {record.content_type} record, not the {cls.__name__} asked for")
    return record


def present(value: T | None, what: str, record: RecordBase) -> T:
    """A field every succeeded record has (its timings, its artifact, its section's facts): None there is a bug,
    raised as one (internal_error)."""
    if value is None:
        raise GenforgeError(f"the {record.status} record {record.id} has no {what}")
    return value


class ErrorDetail(BaseModel):
    model_config = ConfigDict(extra="allow")  # codes may add details (e.g. retry_after, installed)

    code: str = Field(description="Machine-readable error code (see the README's error table).")
    message: str = Field(description="What went wrong, naming the field for invalid input.")
    hint: str | None = Field(description="What to do about it.")
    content_id: str | None = Field(description="The failed record this error left, if the request was accepted.")
    field: str | None = Field(None, description="The request field at fault.")


class ErrorBody(BaseModel):
    """The one error shape of the native API."""

    error: ErrorDetail


class FunctionCall(BaseModel):
    model_config = ConfigDict(extra="forbid")

    name: str = Field(max_length=64)
    arguments: str = Field(max_length=100_000, description="The arguments object as JSON text (OpenAI's shape).")


class ToolCallOut(BaseModel):
    """A call of a declared function in an assistant's answer, in OpenAI's shape."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(max_length=100)
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(BaseModel):
    """A chat turn. An assistant's turn may hold the calls it made (`tool_calls`); a `tool` turn answers one
    (`tool_call_id`)."""

    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant", "tool"]
    content: str = Field("", max_length=100_000)
    tool_calls: list[ToolCallOut] | None = Field(None, max_length=64)
    tool_call_id: str | None = Field(None, max_length=100)
