"""The OpenAI-compatible API under /v1: the same service, the same records, OpenAI's shapes.

Every call is recorded in the history like a native one; its content id is in the
X-Genforge-Content-Id header. A parameter genforge cannot honour is a 400 unless it has its
neutral value (n=1, zero penalties, ...); unknown parameters are refused, not ignored.
`response_format` (json_object, json_schema) and `tools` become the native `params.response_format` and
`params.tools`: the answer is validated against its schema before it is a success.
"""

from __future__ import annotations

import base64
import json
import re
import time
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from fastapi import APIRouter, File, Form, Request, Response, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from genforge.api.deps import CallerDep, CatalogDep, ServiceDep
from genforge.api.errors import error_responses, openai_error_body
from genforge.api.streaming import SSE_DOC, Final, event_stream, follow, generate_sync
from genforge.api.uploads import read_limited
from genforge.contenttypes import ContentRecord
from genforge.contenttypes.base import pydantic_error
from genforge.contenttypes.image import ImageRecord
from genforge.contenttypes.records import ToolCallOut, present, record_as
from genforge.contenttypes.request import GenerateRequest
from genforge.contenttypes.text import MAX_TOKENS_LIMIT, TextRecord
from genforge.contenttypes.transcript import to_srt, to_vtt, words_of
from genforge.core.caller import Caller
from genforge.core.jobs import Job
from genforge.core.service import ContentService
from genforge.core.uploads import mask_of_openai
from genforge.engines.params import SEED_LIMIT
from genforge.errors import InvalidRequest

router = APIRouter(prefix="/v1", tags=["openai"])
HEADER = "X-Genforge-Content-Id"
# What each kind of /v1 route can answer, in OpenAI's error shape (invalid requests are 400 there).
GEN_ERRORS = error_responses(400, 404, 413, 429, 502, 503, 504, 507, openai=True)

# Parameters OpenAI clients send that genforge accepts only at their neutral value.
NEUTRAL: dict[str, tuple] = {
    "n": (None, 1),
    "best_of": (None, 1),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "functions": (None, []),
    "function_call": (None, "none", "auto"),
    "echo": (None, False),
    "suffix": (None, ""),
    "store": (None, False),
    "metadata": (None, {}),
    "service_tier": (None, "auto", "default"),
    "modalities": (None, ["text"]),
    "prediction": (None,),
    "audio": (None,),
    "reasoning_effort": (None,),
    "web_search_options": (None,),
}
OPENAI_VOICES = {"alloy", "ash", "ballad", "coral", "echo", "fable", "nova", "onyx", "sage", "shimmer", "verse"}
# Accepted and recorded in the request only (no effect on generation).
IGNORED_METADATA = {"user", "stream_options"}


class _OpenAIBody(BaseModel):
    model_config = ConfigDict(extra="allow")

    def unsupported(self) -> None:
        """400 for any parameter that is set to something genforge cannot honour."""
        for name, value in (self.model_extra or {}).items():
            if name in IGNORED_METADATA:
                continue
            if name not in NEUTRAL:
                raise InvalidRequest(
                    f"unsupported parameter {name!r}",
                    field=name,
                    hint="genforge refuses parameters it cannot honour rather than ignore them.",
                )
            if value not in NEUTRAL[name]:
                raise InvalidRequest(
                    f"{name}={json.dumps(value)} is not supported (only its neutral value)",
                    field=name,
                    hint="Leave it unset.",
                )


class ChatMessage(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[dict] | None = None
    tool_calls: list[ToolCallOut] | None = None
    tool_call_id: str | None = Field(None, max_length=100)


# Fields of an assistant message genforge returned (or the SDK adds to it) that are sent back as they were.
ECHOED: dict[str, tuple[Any, ...]] = {
    "refusal": (None,),
    "annotations": (None, []),
    "audio": (None,),
    "function_call": (None,),
}


class JsonSchemaSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    name: str = Field(max_length=64)
    description: str | None = None
    schema_: dict[str, Any] | None = Field(None, alias="schema")
    strict: bool | None = None


class OpenAIResponseFormat(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaSpec | None = None

    def native(self) -> dict[str, Any] | None:
        if self.type == "text":
            return None
        if self.type == "json_object":
            return {"type": "json_object"}
        if self.json_schema is None:
            raise InvalidRequest("response_format json_schema needs its json_schema", field="response_format")
        schema = self.json_schema.schema_ if self.json_schema.schema_ is not None else {"type": "object"}
        return {"type": "json_schema", "json_schema": schema, "name": self.json_schema.name, "strict": True}


class OpenAIFunction(BaseModel):
    model_config = ConfigDict(extra="forbid")
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class OpenAITool(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: OpenAIFunction


class NamedChoice(BaseModel):
    model_config = ConfigDict(extra="forbid")
    type: Literal["function"]
    function: dict[str, str]


class ChatCompletionRequest(_OpenAIBody):
    model: str = Field(min_length=1, max_length=200)
    messages: list[ChatMessage] = Field(min_length=1, max_length=256)
    max_tokens: int | None = Field(None, gt=0, le=MAX_TOKENS_LIMIT)
    max_completion_tokens: int | None = Field(None, gt=0, le=MAX_TOKENS_LIMIT)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, lt=SEED_LIMIT)
    stop: str | list[str] | None = None
    stream: bool = False
    response_format: OpenAIResponseFormat | None = None
    tools: list[OpenAITool] | None = Field(None, max_length=64)
    tool_choice: Literal["none", "auto", "required"] | NamedChoice | None = None
    parallel_tool_calls: bool | None = None


class CompletionRequest(_OpenAIBody):
    model: str = Field(min_length=1, max_length=200)
    prompt: str | list[str]
    max_tokens: int | None = Field(16, gt=0, le=MAX_TOKENS_LIMIT)  # OpenAI's default for completions
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    seed: int | None = Field(None, ge=0, lt=SEED_LIMIT)
    stop: str | list[str] | None = None
    stream: bool = False
    response_format: OpenAIResponseFormat | None = None


class ImageRequest(_OpenAIBody):
    prompt: str = Field(min_length=1, max_length=100_000)
    model: str | None = Field(None, min_length=1, max_length=200)
    size: str | None = Field(None, pattern=r"^[0-9]{1,5}x[0-9]{1,5}$")
    response_format: Literal["url", "b64_json"] = "url"
    seed: int | None = Field(None, ge=0, lt=SEED_LIMIT)  # an extension: OpenAI has no seed for images


class SpeechRequest(_OpenAIBody):
    model: str = Field(min_length=1, max_length=200)
    input: str = Field(min_length=1, max_length=100_000)
    voice: str | None = Field(None, max_length=64)
    response_format: Literal["wav"] | None = None
    speed: float | None = Field(None, ge=0.25, le=4.0)


# --- responses ------------------------------------------------------------------------------------------
class Usage(BaseModel):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatChoice(BaseModel):
    index: int
    message: dict = Field(description='{"role": "assistant", "content": TEXT}')
    finish_reason: str | None
    logprobs: None = None


class ChatCompletion(BaseModel):
    id: str
    object: Literal["chat.completion"]
    created: int
    model: str
    system_fingerprint: str
    choices: list[ChatChoice]
    usage: Usage | None = Field(description="null when a count is unknown (a remote server that reports none).")


class CompletionChoice(BaseModel):
    index: int
    text: str
    finish_reason: str | None
    logprobs: None = None


class Completion(BaseModel):
    id: str
    object: Literal["text_completion"]
    created: int
    model: str
    choices: list[CompletionChoice]
    usage: Usage | None = Field(description="null when a count is unknown (a remote server that reports none).")


class ModelObject(BaseModel):
    id: str
    object: Literal["model"]
    created: int
    owned_by: str
    type: str = Field(description="genforge: the content type the model makes.")


class ModelList(BaseModel):
    object: Literal["list"]
    data: list[ModelObject]


class ImageData(BaseModel):
    url: str | None = None
    b64_json: str | None = None
    revised_prompt: None = None


class ImagesResponse(BaseModel):
    created: int
    data: list[ImageData]
    genforge: dict = Field(description="genforge: the content id and the record's warnings.")


# --- requests into the service ------------------------------------------------------------------------
PERSONA_PREFIX = "persona:"


def _request(renames: dict[str, str] | None = None, **fields) -> GenerateRequest:
    """The native request for an OpenAI call; what the native model refuses is a 400 naming OpenAI's field.
    `model: "persona:NAME"` (or NAME@VERSION) asks for a persona's defaults, its model among them."""
    model = fields.get("model") or ""
    if model.startswith(PERSONA_PREFIX):
        # the model is left unset (not None): the persona's own model applies, as on the native API
        fields = {k: v for k, v in fields.items() if k != "model"} | {"persona": model.removeprefix(PERSONA_PREFIX)}
    try:
        return GenerateRequest(**fields)
    except ValidationError as exc:
        err = pydantic_error(exc)
        for native, openai in (renames or {}).items():
            if err.field == native or (err.field or "").startswith(native + "."):
                err.message = err.message.replace(native, openai, 1)
                err.field = openai
        raise err from None


def _text_params(body) -> dict:
    params = {
        "max_tokens": getattr(body, "max_completion_tokens", None) or body.max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "seed": body.seed,
        "stop": body.stop,
        "response_format": body.response_format.native() if body.response_format else None,
    }
    tools: list[OpenAITool] | None = getattr(body, "tools", None)
    if tools:
        params["tools"] = [t.function.model_dump(exclude_none=True, exclude={"strict"}) for t in tools]
        choice = body.tool_choice
        params["tool_choice"] = choice.function.get("name") if isinstance(choice, NamedChoice) else choice
        params["parallel_tool_calls"] = body.parallel_tool_calls
    elif getattr(body, "tool_choice", None) not in (None, "none", "auto"):
        raise InvalidRequest("tool_choice needs tools", field="tool_choice")
    return {k: v for k, v in params.items() if v is not None}


def _message_text(message: ChatMessage) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    parts = []
    for part in message.content:
        if part.get("type") != "text" or not isinstance(part.get("text", ""), str):
            raise InvalidRequest(
                f"message content of type {part.get('type')!r} is not supported",
                field="messages",
                hint="Send text content only.",
            )
        parts.append(part.get("text", ""))
    return "".join(parts)


def _chat_message(m: ChatMessage) -> dict[str, Any]:
    """The native chat turn of an OpenAI message. An assistant message genforge returned comes back as it was
    (`message.model_dump()`): its calls are kept; its other fields must be empty."""
    for name, value in (m.model_extra or {}).items():
        if name not in ECHOED:
            raise InvalidRequest(f"unsupported message field {name!r}", field="messages")
        if value not in ECHOED[name]:
            raise InvalidRequest(f"message field {name}={json.dumps(value)} is not supported", field="messages")
    # OpenAI's `developer` messages are system instructions for the chat template.
    out: dict[str, Any] = {"role": "system" if m.role == "developer" else m.role, "content": _message_text(m)}
    if m.tool_calls:
        out["tool_calls"] = [c.model_dump() for c in m.tool_calls]
    if m.tool_call_id is not None:
        out["tool_call_id"] = m.tool_call_id
    return out


def _chat_request(body: ChatCompletionRequest) -> GenerateRequest:
    body.unsupported()
    messages = [_chat_message(m) for m in body.messages]
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users or not users[-1].strip():
        raise InvalidRequest("messages must contain a user message with text", field="messages")
    system = "\n".join(m["content"] for m in messages if m["role"] == "system") or None
    return _request(
        {"params": "params"},
        content_type="text",
        prompt=users[-1],
        system=system,
        model=body.model,
        params=_text_params(body),
        messages=messages,
    )


def _usage(record: TextRecord) -> Usage | None:
    """OpenAI's usage, or None when the record does not know a count (a remote that reported none): a made-up
    number would be read as a real one."""
    usage = record.usage
    if usage.prompt_tokens is None or usage.completion_tokens is None:
        return None
    return Usage(**usage.model_dump(), total_tokens=usage.prompt_tokens + usage.completion_tokens)


def _message(record: TextRecord) -> dict[str, Any]:
    """The assistant's message: its text, or (finish_reason tool_calls) the calls it made."""
    if record.tool_calls:
        return {"role": "assistant", "content": None, "tool_calls": [c.model_dump() for c in record.tool_calls]}
    return {"role": "assistant", "content": record.text}


def _finish_reason(record: TextRecord) -> str | None:
    return "tool_calls" if record.tool_calls else record.finish_reason


def _created(record: ContentRecord) -> int:
    return int(record.created_at.timestamp())


def _data(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"


async def _openai_frames(
    svc: ContentService,
    job: Job,
    caller: Caller,
    chunk: Callable,
    final_chunks: Callable[[ContentRecord], list[dict]],
) -> AsyncIterator[str]:
    """Token events as OpenAI chunks, then the final chunk(s) and [DONE]; a failure ends with an error
    object and no [DONE], so a cut stream never looks complete. Leaving the stream cancels the job."""
    yield _data(chunk(None, role=True))
    async for item in follow(svc, job, caller, cancel_on_disconnect=True):
        if not isinstance(item, Final):
            if item["type"] == "token" and (frame := chunk(item["text"])) is not None:
                yield _data(frame)
            continue
        if item.error is not None:
            yield _data(openai_error_body(item.error))
            return
        for obj in final_chunks(item.record):
            yield _data(obj)
        yield "data: [DONE]\n\n"


def _stream_response(svc: ContentService, job: Job, caller: Caller, chunk, final_chunks) -> StreamingResponse:
    return event_stream(_openai_frames(svc, job, caller, chunk, final_chunks), job.content_id)


# --- routes -----------------------------------------------------------------------------------------
@router.get("/models", response_model=ModelList, responses=error_responses(400, openai=True))
def list_openai_models(catalog: CatalogDep) -> ModelList:
    # what a request can name as its model: not the identity check's models, nor LoRAs (they are params)
    entries = [e for e in catalog.entries() if e.installed and e.type not in ("identity", "lora")]
    return ModelList(
        object="list",
        data=[ModelObject(id=e.name, object="model", created=0, owned_by="genforge", type=e.type) for e in entries],
    )


@router.post(
    "/chat/completions",
    response_model=ChatCompletion,
    responses={200: {"description": "The completion, or chunks with stream: true.", "content": SSE_DOC}, **GEN_ERRORS},
)
async def chat_completions(body: ChatCompletionRequest, svc: ServiceDep, caller: CallerDep, response: Response):
    req = _chat_request(body)
    if not body.stream:
        record = record_as(await generate_sync(svc, req, caller), TextRecord)
        response.headers[HEADER] = record.id
        return ChatCompletion(
            id=f"chatcmpl-{record.id}",
            object="chat.completion",
            created=_created(record),
            model=record.model.name,
            system_fingerprint=f"genforge-{record.model.engine_version}",
            choices=[ChatChoice(index=0, message=_message(record), finish_reason=_finish_reason(record))],
            usage=_usage(record),
        )
    job = await run_in_threadpool(svc.submit, req, caller)
    # A constrained answer is sent once it is validated: a try that fails its schema is retried with the next seed,
    # and its tokens, once streamed, could not be taken back.
    calls = bool(req.params.get("tools")) and req.params.get("tool_choice") != "none"
    hold = "response_format" in req.params or calls
    base = {
        "id": f"chatcmpl-{job.content_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": req.model,
    }
    include_usage = bool(((body.model_extra or {}).get("stream_options") or {}).get("include_usage"))

    def chunk(text: str | None, role: bool = False) -> dict | None:
        if hold and not role:
            return None
        delta = {"role": "assistant", "content": ""} if role else {"content": text}
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}]}

    def final_chunks(any_record: ContentRecord) -> list[dict]:
        record = record_as(any_record, TextRecord)
        held: list[dict] = []
        if hold:
            message = _message(record)
            delta: dict[str, Any] = {"content": message["content"]}
            if record.tool_calls:
                delta["tool_calls"] = [{"index": i, **c} for i, c in enumerate(message["tool_calls"])]
            held = [{**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}]}]
        last = {
            **base,
            "choices": [{"index": 0, "delta": {}, "finish_reason": _finish_reason(record), "logprobs": None}],
        }
        usage = _usage(record)
        return [
            *held,
            last,
            *([{**base, "choices": [], "usage": usage.model_dump() if usage else None}] if include_usage else []),
        ]

    return _stream_response(svc, job, caller, chunk, final_chunks)


@router.post(
    "/completions",
    response_model=Completion,
    responses={200: {"description": "The completion, or chunks with stream: true.", "content": SSE_DOC}, **GEN_ERRORS},
)
async def completions(body: CompletionRequest, svc: ServiceDep, caller: CallerDep, response: Response):
    body.unsupported()
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise InvalidRequest("exactly one prompt per request is supported", field="prompt")
    req = _request(content_type="text", prompt=prompts[0], model=body.model, params=_text_params(body), raw=True)
    if not body.stream:
        record = record_as(await generate_sync(svc, req, caller), TextRecord)
        response.headers[HEADER] = record.id
        return Completion(
            id=f"cmpl-{record.id}",
            object="text_completion",
            created=_created(record),
            model=record.model.name,
            choices=[CompletionChoice(index=0, text=record.text, finish_reason=record.finish_reason)],
            usage=_usage(record),
        )
    job = await run_in_threadpool(svc.submit, req, caller)
    base = {
        "id": f"cmpl-{job.content_id}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": req.model,
    }

    hold = "response_format" in req.params  # sent once validated (see chat_completions)

    def chunk(text: str | None, role: bool = False) -> dict | None:
        if hold and not role:
            return None
        return {**base, "choices": [{"index": 0, "text": text or "", "finish_reason": None, "logprobs": None}]}

    def final_chunks(any_record: ContentRecord) -> list[dict]:
        record = record_as(any_record, TextRecord)
        choice = {
            "index": 0,
            "text": record.text if hold else "",
            "finish_reason": record.finish_reason,
            "logprobs": None,
        }
        return [{**base, "choices": [choice]}]

    return _stream_response(svc, job, caller, chunk, final_chunks)


def _size(size: str | None) -> dict[str, Any]:
    if size is None:
        return {}
    width, height = (int(v) for v in size.lower().split("x"))
    return {"width": width, "height": height}


@router.post("/images/generations", response_model=ImagesResponse, responses=GEN_ERRORS)
async def image_generations(body: ImageRequest, svc: ServiceDep, caller: CallerDep, response: Response):
    body.unsupported()
    params = {**_size(body.size), **({"seed": body.seed} if body.seed is not None else {})}
    req = _request(
        {"params.width": "size", "params.height": "size"},
        content_type="image",
        prompt=body.prompt,
        model=body.model,
        params=params,
    )
    record = record_as(await generate_sync(svc, req, caller), ImageRecord)
    response.headers[HEADER] = record.id
    if body.response_format == "url":
        item = ImageData(url=present(record.artifact, "artifact", record).url)
    else:
        path, _ = await run_in_threadpool(svc.artifact, record.id, caller)
        data = await run_in_threadpool(path.read_bytes)  # a file read never runs on the event loop
        item = ImageData(b64_json=base64.b64encode(data).decode("ascii"))
    return ImagesResponse(
        created=_created(record), data=[item], genforge={"content_id": record.id, "warnings": record.warnings}
    )


@router.post(
    "/audio/speech",
    response_class=Response,
    responses={
        200: {
            "description": "The speech as WAV.",
            "content": {"audio/wav": {"schema": {"type": "string", "format": "binary"}}},
        },
        **GEN_ERRORS,
    },
)
async def audio_speech(body: SpeechRequest, svc: ServiceDep, caller: CallerDep):
    body.unsupported()
    if body.voice in OPENAI_VOICES:
        raise InvalidRequest(
            f"voice {body.voice!r} is one of OpenAI's voices, which genforge does not have",
            field="voice",
            hint="Use voice='default' for the model's own voice, or a speaker of the model "
            "(see `genforge models list`).",
        )
    voice = None if body.voice == "default" else body.voice
    params = {k: v for k, v in {"voice": voice, "speed": body.speed}.items() if v is not None}
    req = _request(
        {"prompt": "input", "params.voice": "voice", "params.speed": "speed"},
        content_type="speech",
        prompt=body.input,
        model=body.model,
        params=params,
    )
    record = await generate_sync(svc, req, caller)
    path, media_type = await run_in_threadpool(svc.artifact, record.id, caller)
    # Streamed from the file in chunks by worker threads: no whole-file copy, no read on the event loop.
    return FileResponse(path, media_type=media_type, headers={HEADER: record.id})


# --- /v1/images/edits: OpenAI's multipart form -----------------------------------------------------------------
EDIT_FIELDS = {"image", "image[]", "mask", "prompt", "model", "n", "size", "response_format", "user", "seed"}


def _form_text(form: Any, name: str) -> str | None:
    value = form.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise InvalidRequest(f"{name}: expected a text field, not a file", field=name)
    return value


async def _form_file(form: Any, name: str, limit: int) -> bytes | None:
    value = form.get(name)
    if value is None:
        return None
    if isinstance(value, str):
        raise InvalidRequest(f"{name}: expected a file", field=name)
    data: bytes = await read_limited(value, limit)
    return data


@router.post(
    "/images/edits",
    response_model=ImagesResponse,
    responses=GEN_ERRORS,
    openapi_extra={
        "requestBody": {
            "content": {
                "multipart/form-data": {
                    "schema": {
                        "type": "object",
                        "required": ["image", "prompt"],
                        "properties": {
                            "image": {"type": "string", "format": "binary"},
                            "mask": {"type": "string", "format": "binary"},
                            "prompt": {"type": "string"},
                            "model": {"type": "string"},
                            "n": {"type": "integer"},
                            "size": {"type": "string"},
                            "response_format": {"type": "string", "enum": ["url", "b64_json"]},
                            "seed": {"type": "integer"},
                        },
                    }
                }
            },
            "required": True,
        }
    },
)
async def image_edits(request: Request, svc: ServiceDep, caller: CallerDep, response: Response):
    """Edit a picture (OpenAI's images.edit): with a `mask` (OpenAI's convention: transparent = repaint; an opaque
    grey mask is read as white = repaint) it is inpainting, without one img2img over the whole picture at
    strength 0.75 (params.strength's default). The pictures are stored as uploads of the caller."""
    form = await request.form()
    try:
        unknown = sorted(set(form.keys()) - EDIT_FIELDS)
        if unknown:
            raise InvalidRequest(f"{unknown[0]}: not supported by this server", field=unknown[0])
        limit = svc.uploads.max_bytes
        image = await _form_file(form, "image", limit) or await _form_file(form, "image[]", limit)
        if image is None:
            raise InvalidRequest("image: a picture is required", field="image")
        mask = await _form_file(form, "mask", limit)
        prompt = _form_text(form, "prompt")
        n, size, fmt = _form_text(form, "n"), _form_text(form, "size"), _form_text(form, "response_format") or "url"
        seed = _form_text(form, "seed")
    finally:
        await form.close()
    if not prompt:
        raise InvalidRequest("prompt: required", field="prompt")
    if n not in (None, "1"):
        raise InvalidRequest("n: this server makes one image per request", field="n")
    if fmt not in ("url", "b64_json"):
        raise InvalidRequest("response_format: url or b64_json", field="response_format")
    if size is not None and not re.fullmatch(r"[0-9]{1,5}x[0-9]{1,5}", size):
        raise InvalidRequest("size: WIDTHxHEIGHT, e.g. 512x512", field="size")
    if seed is not None and not seed.isdigit():
        raise InvalidRequest("seed: a whole number", field="seed")
    init = await run_in_threadpool(svc.uploads.create, image, caller)
    params: dict[str, Any] = {"init_image": init.id, **_size(size)}
    if size is None:  # the picture's own size, to a multiple of 8
        width, height = init.width or 8, init.height or 8  # created as a picture here: it has a size
        params |= {"width": max(8, width // 8 * 8), "height": max(8, height // 8 * 8)}
    if mask is not None:
        params["mask"] = (await run_in_threadpool(svc.uploads.create, mask_of_openai(mask), caller)).id
    if seed is not None:
        params["seed"] = int(seed)
    req = _request(
        {"params.width": "size", "params.height": "size"},
        content_type="image",
        prompt=prompt,
        model=_form_text(form, "model"),
        params=params,
    )
    record = record_as(await generate_sync(svc, req, caller), ImageRecord)
    response.headers[HEADER] = record.id
    if fmt == "url":
        item = ImageData(url=present(record.artifact, "artifact", record).url)
    else:
        path, _ = await run_in_threadpool(svc.artifact, record.id, caller)
        data = await run_in_threadpool(path.read_bytes)
        item = ImageData(b64_json=base64.b64encode(data).decode("ascii"))
    return ImagesResponse(
        created=_created(record), data=[item], genforge={"content_id": record.id, "warnings": record.warnings}
    )


# --- speech to text -----------------------------------------------------------------------------------------
TranscriptFormat = Literal["json", "text", "srt", "verbose_json", "vtt"]
# OpenAI's model names: the server's default transcription model answers them (the record names the real one).
OPENAI_TRANSCRIBERS = {"whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"}
TRANSCRIPT_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "The transcript: JSON ({text}), verbose JSON (segments, words), or text, SRT or WebVTT.",
        "content": {"application/json": {}, "text/plain": {}},
    },
    **GEN_ERRORS,
}


async def _transcription(
    svc: ContentService,
    caller: Caller,
    task: Literal["transcribe", "translate"],
    file: UploadFile,
    model: str,
    language: str | None,
    prompt: str | None,
    response_format: str,
    temperature: float,
    granularities: list[str] | None,
) -> Response:
    if response_format not in ("json", "text", "srt", "verbose_json", "vtt"):
        raise InvalidRequest(
            f"response_format: {response_format!r} is not one of json, text, srt, verbose_json, vtt",
            field="response_format",
        )
    granularities = granularities or ["segment"]
    unknown = set(granularities) - {"word", "segment"}
    if unknown:
        raise InvalidRequest(f"timestamp_granularities: {sorted(unknown)} are not word or segment", field="file")
    if "word" in granularities and response_format != "verbose_json":
        raise InvalidRequest(
            "timestamp_granularities: word timings need response_format verbose_json", field="response_format"
        )
    data = await file.read()
    name = file.filename or "audio.wav"
    upload = await run_in_threadpool(svc.uploads.create_audio, data, Path(name).suffix, caller.id)
    params: dict[str, Any] = {"upload": upload.id, "task": task, "temperature": temperature}
    if language:
        params["language"] = language.lower()
    if prompt:
        params["initial_prompt"] = prompt
    req = _request(
        {"params.language": "language", "params.initial_prompt": "prompt", "params.temperature": "temperature"},
        content_type="transcript",
        prompt=f"{'translation' if task == 'translate' else 'transcription'} of {name}"[:200],
        model=None if model in OPENAI_TRANSCRIBERS else model,
        params=params,
    )
    record = await generate_sync(svc, req, caller)
    path, _ = await run_in_threadpool(svc.artifact, record.id, caller)
    doc: dict[str, Any] = json.loads(await run_in_threadpool(path.read_bytes))
    headers = {HEADER: record.id}
    if response_format == "text":
        return Response(doc["text"], media_type="text/plain; charset=utf-8", headers=headers)
    if response_format == "srt":
        return Response(to_srt(doc), media_type="text/plain; charset=utf-8", headers=headers)
    if response_format == "vtt":
        return Response(to_vtt(doc), media_type="text/vtt; charset=utf-8", headers=headers)
    genforge = {"content_id": record.id, "warnings": record.warnings, "no_speech": doc.get("no_speech", False)}
    body: dict[str, Any] = {"text": doc["text"], "genforge": genforge}
    if response_format == "verbose_json":
        body.update(
            task=task,
            language=doc["language"],
            duration=doc["duration"],
            segments=[
                {
                    "id": s["id"],
                    "seek": 0,
                    "start": s["start"],
                    "end": s["end"],
                    "text": s["text"],
                    "tokens": [],
                    "temperature": s["temperature"],
                    "avg_logprob": s["avg_logprob"],
                    "compression_ratio": s["compression_ratio"],
                    "no_speech_prob": s["no_speech_prob"],
                }
                for s in doc["segments"]
            ]
            if "segment" in granularities
            else None,
        )
        if "word" in granularities:
            body["words"] = [{"word": w["word"], "start": w["start"], "end": w["end"]} for w in words_of(doc)]
        if body["segments"] is None:
            del body["segments"]
    return JSONResponse(body, headers=headers)


@router.post("/audio/transcriptions", response_class=Response, responses=TRANSCRIPT_RESPONSES)
async def audio_transcriptions(
    svc: ServiceDep,
    caller: CallerDep,
    file: Annotated[UploadFile, File(description="Audio: WAV, MP3, OGG, FLAC, M4A (decoded by PyAV).")],
    model: Annotated[str, Form(description="whisper-base (or an OpenAI name: the default model answers).")],
    language: Annotated[str | None, Form(description="ISO 639-1; none: detected.")] = None,
    prompt: Annotated[str | None, Form(max_length=1000)] = None,
    response_format: Annotated[str, Form()] = "json",
    temperature: Annotated[float, Form(ge=0, le=1)] = 0.0,
    timestamp_granularities: Annotated[list[str] | None, Form(alias="timestamp_granularities[]")] = None,
) -> Response:
    return await _transcription(
        svc, caller, "transcribe", file, model, language, prompt, response_format, temperature, timestamp_granularities
    )


@router.post("/audio/translations", response_class=Response, responses=TRANSCRIPT_RESPONSES)
async def audio_translations(
    svc: ServiceDep,
    caller: CallerDep,
    file: Annotated[UploadFile, File(description="Audio: WAV, MP3, OGG, FLAC, M4A (decoded by PyAV).")],
    model: Annotated[str, Form(description="whisper-base (or an OpenAI name: the default model answers).")],
    prompt: Annotated[str | None, Form(max_length=1000)] = None,
    response_format: Annotated[str, Form()] = "json",
    temperature: Annotated[float, Form(ge=0, le=1)] = 0.0,
) -> Response:
    return await _transcription(svc, caller, "translate", file, model, None, prompt, response_format, temperature, None)
