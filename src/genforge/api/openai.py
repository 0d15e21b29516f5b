"""The OpenAI-compatible API under /v1: the same service, the same records, OpenAI's shapes.

Every call is recorded in the history like a native one; its content id is in the
X-Genforge-Content-Id header. A parameter genforge cannot honour is a 400 unless it has its
neutral value (n=1, zero penalties, no tools, ...); unknown parameters are refused, not ignored.
"""

from __future__ import annotations

import base64
import json
import time
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Request, Response
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from genforge.api.content import SSE_HEADERS
from genforge.api.deps import service
from genforge.api.errors import openai_error_body
from genforge.errors import InvalidRequest
from genforge.jobs import Job
from genforge.schemas import GenerateRequest
from genforge.service import ContentService

router = APIRouter(prefix="/v1", tags=["openai"])
Service = Annotated[ContentService, Depends(service)]
HEADER = "X-Genforge-Content-Id"

# Parameters OpenAI clients send that genforge accepts only at their neutral value.
NEUTRAL: dict[str, tuple] = {
    "n": (None, 1),
    "best_of": (None, 1),
    "presence_penalty": (None, 0, 0.0),
    "frequency_penalty": (None, 0, 0.0),
    "logit_bias": (None, {}),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "tools": (None, []),
    "functions": (None, []),
    "tool_choice": (None, "none", "auto"),
    "function_call": (None, "none", "auto"),
    "parallel_tool_calls": (None, True, False),
    "response_format": (None, {"type": "text"}),
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
    role: str
    content: str | list[dict] | None = None


class ChatCompletionRequest(_OpenAIBody):
    model: str
    messages: list[ChatMessage] = Field(min_length=1)
    max_tokens: int | None = None
    max_completion_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False


class CompletionRequest(_OpenAIBody):
    model: str
    prompt: str | list[str]
    max_tokens: int | None = 16  # OpenAI's default for completions
    temperature: float | None = None
    top_p: float | None = None
    seed: int | None = None
    stop: str | list[str] | None = None
    stream: bool = False


class ImageRequest(_OpenAIBody):
    prompt: str
    model: str | None = None
    size: str | None = None
    response_format: str = "url"
    seed: int | None = None  # an extension: OpenAI has no seed for images


class SpeechRequest(_OpenAIBody):
    model: str
    input: str
    voice: str | None = None
    response_format: str | None = None
    speed: float | None = None


def _text_params(body) -> dict:
    params = {
        "max_tokens": getattr(body, "max_completion_tokens", None) or body.max_tokens,
        "temperature": body.temperature,
        "top_p": body.top_p,
        "seed": body.seed,
        "stop": body.stop,
    }
    return {k: v for k, v in params.items() if v is not None}


def _message_text(message: ChatMessage) -> str:
    if message.content is None or isinstance(message.content, str):
        return message.content or ""
    parts = []
    for part in message.content:
        if part.get("type") != "text":
            raise InvalidRequest(
                f"message content of type {part.get('type')!r} is not supported",
                field="messages",
                hint="Send text content only.",
            )
        parts.append(part.get("text", ""))
    return "".join(parts)


def _chat_request(body: ChatCompletionRequest) -> GenerateRequest:
    body.unsupported()
    messages = [{"role": m.role, "content": _message_text(m)} for m in body.messages]
    users = [m["content"] for m in messages if m["role"] == "user"]
    if not users:
        raise InvalidRequest("messages must contain a user message", field="messages")
    system = "\n".join(m["content"] for m in messages if m["role"] in ("system", "developer")) or None
    return GenerateRequest(
        content_type="text",
        prompt=users[-1],
        system=system,
        model=body.model,
        params=_text_params(body),
        messages=messages,
    )


def _usage(record: dict) -> dict:
    usage = record["usage"]
    return {**usage, "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"]}


def _created(record: dict) -> int:
    return int(datetime.fromisoformat(record["created_at"]).timestamp())


def _data(obj: dict) -> str:
    return f"data: {json.dumps(obj)}\n\n"


async def _openai_stream(svc: ContentService, job: Job, chunk, final_chunks) -> AsyncIterator[str]:
    """Token events as OpenAI chunks, then the final chunk(s) and [DONE]; a failure ends with an error
    object and no [DONE], so a cut stream never looks complete. Leaving the stream cancels the job."""
    events = job.listen_async()
    try:
        yield _data(chunk(None, role=True))
        while True:
            event = await events.get()
            if event["type"] == "token":
                yield _data(chunk(event["text"]))
            elif event["type"] == "final":
                if job.error is not None:
                    yield _data(openai_error_body(job.error))
                    return
                for obj in final_chunks(job.result):
                    yield _data(obj)
                yield "data: [DONE]\n\n"
                return
    finally:
        if not job.done.is_set():
            svc.cancel(job.content_id, wait=False)


def _stream_response(svc: ContentService, job: Job, chunk, final_chunks) -> StreamingResponse:
    return StreamingResponse(
        _openai_stream(svc, job, chunk, final_chunks),
        media_type="text/event-stream",
        headers={**SSE_HEADERS, HEADER: job.content_id},
    )


@router.get("/models")
def list_models(request: Request) -> dict:
    entries = [e for e in request.app.state.runtime.catalog.entries() if e["installed"]]
    return {
        "object": "list",
        "data": [
            {"id": e["name"], "object": "model", "created": 0, "owned_by": "genforge", "type": e["type"]}
            for e in entries
        ],
    }


@router.post("/chat/completions")
async def chat_completions(body: ChatCompletionRequest, svc: Service, response: Response):
    req = _chat_request(body)
    if not body.stream:
        record = await run_in_threadpool(svc.generate, req)
        response.headers[HEADER] = record["id"]
        return {
            "id": f"chatcmpl-{record['id']}",
            "object": "chat.completion",
            "created": _created(record),
            "model": record["model"]["name"],
            "system_fingerprint": f"genforge-{record['model']['engine_version']}",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": record["text"]},
                    "finish_reason": record["finish_reason"],
                    "logprobs": None,
                }
            ],
            "usage": _usage(record),
        }
    job = await run_in_threadpool(svc.submit, req)
    base = {
        "id": f"chatcmpl-{job.content_id}",
        "object": "chat.completion.chunk",
        "created": int(time.time()),
        "model": req.model,
    }
    include_usage = bool(((body.model_extra or {}).get("stream_options") or {}).get("include_usage"))

    def chunk(text: str | None, role: bool = False) -> dict:
        delta = {"role": "assistant", "content": ""} if role else {"content": text}
        return {**base, "choices": [{"index": 0, "delta": delta, "finish_reason": None, "logprobs": None}]}

    def final_chunks(record: dict) -> list[dict]:
        last = {
            **base,
            "choices": [{"index": 0, "delta": {}, "finish_reason": record["finish_reason"], "logprobs": None}],
        }
        return [last, {**base, "choices": [], "usage": _usage(record)}] if include_usage else [last]

    return _stream_response(svc, job, chunk, final_chunks)


@router.post("/completions")
async def completions(body: CompletionRequest, svc: Service, response: Response):
    body.unsupported()
    prompts = [body.prompt] if isinstance(body.prompt, str) else body.prompt
    if len(prompts) != 1:
        raise InvalidRequest("exactly one prompt per request is supported", field="prompt")
    req = GenerateRequest(content_type="text", prompt=prompts[0], model=body.model, params=_text_params(body), raw=True)
    if not body.stream:
        record = await run_in_threadpool(svc.generate, req)
        response.headers[HEADER] = record["id"]
        return {
            "id": f"cmpl-{record['id']}",
            "object": "text_completion",
            "created": _created(record),
            "model": record["model"]["name"],
            "choices": [
                {"index": 0, "text": record["text"], "finish_reason": record["finish_reason"], "logprobs": None}
            ],
            "usage": _usage(record),
        }
    job = await run_in_threadpool(svc.submit, req)
    base = {
        "id": f"cmpl-{job.content_id}",
        "object": "text_completion",
        "created": int(time.time()),
        "model": req.model,
    }

    def chunk(text: str | None, role: bool = False) -> dict:
        return {**base, "choices": [{"index": 0, "text": text or "", "finish_reason": None, "logprobs": None}]}

    def final_chunks(record: dict) -> list[dict]:
        return [
            {**base, "choices": [{"index": 0, "text": "", "finish_reason": record["finish_reason"], "logprobs": None}]}
        ]

    return _stream_response(svc, job, chunk, final_chunks)


def _size(size: str | None) -> dict[str, Any]:
    if size is None:
        return {}
    try:
        width, height = (int(v) for v in size.lower().split("x"))
    except ValueError:
        raise InvalidRequest(f"size {size!r} is not WIDTHxHEIGHT", field="size") from None
    return {"width": width, "height": height}


@router.post("/images/generations")
async def image_generations(body: ImageRequest, svc: Service, response: Response):
    body.unsupported()
    if body.response_format not in ("url", "b64_json"):
        raise InvalidRequest(f"response_format {body.response_format!r}: use url or b64_json", field="response_format")
    params = {**_size(body.size), **({"seed": body.seed} if body.seed is not None else {})}
    req = GenerateRequest(content_type="image", prompt=body.prompt, model=body.model, params=params)
    record = await run_in_threadpool(svc.generate, req)
    response.headers[HEADER] = record["id"]
    if body.response_format == "url":
        item = {"url": record["artifact"]["url"]}
    else:
        path, _ = await run_in_threadpool(svc.artifact, record["id"])
        item = {"b64_json": base64.b64encode(path.read_bytes()).decode("ascii")}
    return {
        "created": _created(record),
        "data": [{**item, "revised_prompt": None}],
        "genforge": {"content_id": record["id"], "warnings": record.get("warnings", [])},
    }


@router.post("/audio/speech")
async def audio_speech(body: SpeechRequest, svc: Service):
    body.unsupported()
    if body.response_format not in (None, "wav"):
        raise InvalidRequest(
            f"response_format {body.response_format!r} is not supported; genforge makes wav", field="response_format"
        )
    if body.voice in OPENAI_VOICES:
        raise InvalidRequest(
            f"voice {body.voice!r} is one of OpenAI's voices, which genforge does not have",
            field="voice",
            hint="Use voice='default' for the model's own voice, or a speaker of "
            "the model (see `genforge models list`).",
        )
    voice = None if body.voice == "default" else body.voice
    params = {k: v for k, v in {"voice": voice, "speed": body.speed}.items() if v is not None}
    req = GenerateRequest(content_type="speech", prompt=body.input, model=body.model, params=params)
    record = await run_in_threadpool(svc.generate, req)
    path, media_type = await run_in_threadpool(svc.artifact, record["id"])
    return Response(path.read_bytes(), media_type=media_type, headers={HEADER: record["id"]})
