"""A model served by an OpenAI-compatible server (vLLM, llama-server, Ollama, another genforge).

Runs in the engine worker like every engine: one request at a time per remote engine worker, streamed with
httpx from /v1/chat/completions (or /v1/completions for raw continuation) with `stream: true`. Tokens pass
through as they arrive; a cancel closes the upstream request between chunks. What genforge cannot know (the
remote's weights) it does not claim: the record says `model.remote: true` with the base URL, the served model
id, the remote's `system_fingerprint` and its usage, and no file sha256.

Remote failures map to the one error table: connection refused or DNS failure -> model_unavailable, a remote
5xx or a broken stream -> engine_failed, a timeout -> generation_timeout, an empty answer -> invalid_output.

What a remote sends is bounded: the whole answer (GENFORGE_REMOTE_MAX_RESPONSE_BYTES) and each line of its stream
(GENFORGE_REMOTE_MAX_LINE_BYTES); more is engine_failed. Its API key (or a password in its URL) goes over https,
or over plain http only to this machine, unless the model was registered with --allow-insecure. The base URL is
shown everywhere without its password (genforge/redact.py).
"""

from __future__ import annotations

import ipaddress
import json
import os
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import httpx

from genforge.engines.base import (
    Emit,
    EngineOutput,
    GenerationJob,
    OneAtATimeEngine,
    ResolvedModel,
    TextFacts,
    params_of,
)
from genforge.engines.params import TextSettings
from genforge.errors import Cancelled, EngineFailed, GenerationTimeout, InvalidRequest, ModelUnavailable
from genforge.redact import redact_text, redact_url

CONNECT_TIMEOUT_S = 10.0
ERROR_BODY_BYTES = 64 * 1024  # of an error answer, only its start is quoted


def cleartext_host(base_url: str) -> str | None:
    """The host a plain-http URL leads to when that host is not this machine (loopback); else None. What goes
    there (an API key, the URL's password) crosses the network readable by anyone on the way."""
    parts = urlsplit(base_url)
    if parts.scheme != "http":
        return None
    host = (parts.hostname or "").rstrip(".").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return None
    try:
        if ipaddress.ip_address(host).is_loopback:
            return None
    except ValueError:  # a name: it may resolve anywhere
        pass
    return host


def refuse_cleartext(name: str, base_url: str, sends_key: bool) -> None:
    """ModelUnavailable when a key or a password would go over plain http to another machine."""
    host = cleartext_host(base_url)
    secret = "its API key" if sends_key else "the password in its URL" if urlsplit(base_url).password else None
    if host is None or secret is None:
        return
    raise ModelUnavailable(
        f"model {name!r} would send {secret} over plain http to {host}, readable on the network",
        field="base_url",
        hint=f"Serve the remote over https and register it with an https:// --base-url, or, on a network you trust, "
        f"register it again with --allow-insecure (`genforge models add-remote {name} ... --allow-insecure`).",
    )


class RemoteEngine(OneAtATimeEngine):
    kind = "remote"
    content_types = ("text",)
    uses_cores = False  # the remote computes; this process only relays its stream

    def __init__(self, read_timeout_s: float, max_response_bytes: int, max_line_bytes: int):
        self.timeout = httpx.Timeout(CONNECT_TIMEOUT_S, read=read_timeout_s)
        self.max_response_bytes = max_response_bytes
        self.max_line_bytes = max_line_bytes

    def load(self, model: ResolvedModel) -> float:
        return 0.0  # nothing to load here; the first request finds out whether the remote answers

    @staticmethod
    def _headers(model: ResolvedModel) -> dict:
        if not model.api_key_env:
            return {}
        key = os.environ.get(model.api_key_env)
        if not key:
            raise ModelUnavailable(
                f"model {model.name!r} needs an API key in ${model.api_key_env}, which is not set",
                hint=f"Export {model.api_key_env} in the environment of the process that runs the engine "
                "(`genforge serve`, or `genforge worker` in the distributed mode).",
            )
        return {"Authorization": f"Bearer {key}"}

    @staticmethod
    def _body(job: GenerationJob, model: ResolvedModel) -> tuple[str, dict]:
        p = params_of(job, TextSettings)
        if (p.response_format is not None and p.response_format.type != "text") or p.tools:
            raise InvalidRequest(
                f"model {model.name!r} is remote: structured output and tools run on local llama.cpp models only",
                field="params",
                hint="Use a local model for response_format and tools.",
            )
        body: dict[str, Any] = {
            "model": model.served_model,
            "stream": True,
            "stream_options": {"include_usage": True},
            "max_tokens": p.max_tokens,
            "temperature": p.temperature,
            "top_p": p.top_p,
            "seed": p.seed,
        }
        if p.stop:
            body["stop"] = p.stop
        if job.raw:
            return "/completions", {**body, "prompt": (job.system + "\n\n" if job.system else "") + job.prompt}
        messages = job.messages or [
            *([{"role": "system", "content": job.system}] if job.system else []),
            {"role": "user", "content": job.prompt},
        ]
        return "/chat/completions", {**body, "messages": messages}

    def generate(self, job: GenerationJob, emit: Emit, cancelled: Callable[[], bool]) -> EngineOutput:
        model = job.model
        base = model.path.rstrip("/")
        shown = redact_url(base)  # what messages and the record say: never the URL's password
        path, body = self._body(job, model)
        url = base + path
        headers = self._headers(model)
        if not model.allow_insecure:
            refuse_cleartext(model.name, base, sends_key=bool(headers))
        start = time.perf_counter()
        state = _Stream()
        try:
            with httpx.Client(timeout=self.timeout) as client:
                with client.stream("POST", url, json=body, headers=headers) as resp:
                    if resp.status_code >= 400:
                        raise _http_error(model, resp)
                    server = resp.headers.get("server")
                    for line in self._lines(resp, model):
                        if cancelled():  # leaving the `with` closes the upstream request
                            raise Cancelled("cancelled during generation")
                        if state.feed(line, emit, start):
                            break
        except httpx.ConnectError as exc:
            raise ModelUnavailable(
                f"the remote server of model {model.name!r} at {shown} cannot be reached: {redact_text(str(exc))}",
                hint=f"Start the server at {shown}, or register the model again with the right --base-url "
                f"(`genforge models add-remote {model.name} --base-url URL --model ID`).",
            ) from None
        except httpx.TimeoutException as exc:
            raise GenerationTimeout(
                f"the remote server of model {model.name!r} at {shown} did not answer in time ({type(exc).__name__})",
                hint="The remote is overloaded or stuck; try again, or raise GENFORGE_REMOTE_TIMEOUT_S.",
            ) from None
        except httpx.HTTPError as exc:  # the connection broke mid-stream, or the remote spoke no HTTP
            raise EngineFailed(
                f"the stream from the remote server of model {model.name!r} broke: {type(exc).__name__}: "
                f"{redact_text(str(exc))}",
                hint="The remote server failed during generation; check it and try again.",
            ) from None
        if state.finish is None:
            raise EngineFailed(
                f"the stream from the remote server of model {model.name!r} ended before the answer was complete",
                hint="The remote server stopped during generation; check it and try again.",
            )
        generate_ms = (time.perf_counter() - start) * 1000
        warnings = []
        completion = state.usage.get("completion_tokens")
        if completion is None:  # a remote that reports no usage: count what came, and say so
            completion = state.chunks
            warnings.append("the remote reported no token usage; completion_tokens counts the streamed chunks")
        return EngineOutput(
            data=state.text.encode("utf-8"),
            media_type="text/plain",
            engine_version=(state.fingerprint or server or "unreported")[:50],
            load_ms=0.0,
            generate_ms=generate_ms,
            facts=TextFacts(ttft_ms=state.ttft_ms, warnings=warnings),
            text=state.text,
            finish_reason=state.finish,
            usage={"prompt_tokens": state.usage.get("prompt_tokens"), "completion_tokens": completion},
            provenance={
                "remote": True,
                "base_url": shown,
                "served_model": model.served_model,
                "system_fingerprint": state.fingerprint,
            },
        )

    def _lines(self, resp: httpx.Response, model: ResolvedModel) -> Iterator[str]:
        """The stream's lines (split at LF, a CR before it dropped), with the answer's bytes and each line's
        length bounded: httpx's own iter_lines would hold a line of any length in memory."""
        received, pending = 0, bytearray()
        for data in resp.iter_bytes():  # decompressed: the bound holds for what a gzip bomb unpacks to
            received += len(data)
            if received > self.max_response_bytes:
                raise EngineFailed(
                    f"the remote server of model {model.name!r} sent more than {self.max_response_bytes} bytes",
                    hint="A text answer is far smaller: the remote misbehaves. If it is right, raise "
                    "GENFORGE_REMOTE_MAX_RESPONSE_BYTES.",
                )
            pending += data
            start = 0
            while (end := pending.find(b"\n", start)) >= 0:
                self._check_line(end - start, model)
                yield pending[start:end].rstrip(b"\r").decode("utf-8", "replace")
                start = end + 1
            del pending[:start]
            self._check_line(len(pending), model)  # a line still growing
        if pending:
            yield pending.rstrip(b"\r").decode("utf-8", "replace")

    def _check_line(self, length: int, model: ResolvedModel) -> None:
        if length > self.max_line_bytes:
            raise EngineFailed(
                f"the remote server of model {model.name!r} sent a line longer than {self.max_line_bytes} bytes",
                hint="One chunk of a text stream is far shorter: the remote misbehaves. If it is right, raise "
                "GENFORGE_REMOTE_MAX_LINE_BYTES.",
            )


class _Stream:
    """What the server-sent chunks said so far."""

    def __init__(self):
        self.text = ""
        self.chunks = 0
        self.finish: str | None = None
        self.usage: dict = {}
        self.fingerprint: str | None = None
        self.ttft_ms: float | None = None
        self.done = False

    def feed(self, line: str, emit: Emit, start: float) -> bool:
        """Take one SSE line; True at `[DONE]`."""
        if not line.startswith("data:"):
            return False
        data = line[5:].strip()
        if data == "[DONE]":
            return True
        try:
            chunk = json.loads(data)
        except json.JSONDecodeError:
            raise EngineFailed(f"the remote sent a chunk that is not JSON: {data[:120]!r}") from None
        if "error" in chunk:  # an OpenAI-style error in the stream: the remote failed mid-generation
            err = chunk["error"]
            message = err.get("message") if isinstance(err, dict) else str(err)
            raise EngineFailed(f"the remote server failed during generation: {message}")
        self.fingerprint = chunk.get("system_fingerprint") or self.fingerprint
        if chunk.get("usage"):
            self.usage = chunk["usage"]
        for choice in chunk.get("choices") or []:
            piece = (choice.get("delta") or {}).get("content") if "delta" in choice else choice.get("text")
            if piece:
                if self.ttft_ms is None:
                    self.ttft_ms = round((time.perf_counter() - start) * 1000, 2)
                self.text += piece
                self.chunks += 1
                emit({"type": "token", "text": piece})
            if choice.get("finish_reason"):
                self.finish = choice["finish_reason"]
        return False


def _http_error(model: ResolvedModel, resp: httpx.Response):
    head = bytearray()
    for data in resp.iter_bytes():  # only the start of the error answer, however long it is
        head += data
        if len(head) >= ERROR_BODY_BYTES:
            break
    detail = redact_text(bytes(head[:ERROR_BODY_BYTES]).decode(resp.encoding or "utf-8", "replace")[:300])
    where = f"the remote server of model {model.name!r} ({redact_url(model.path)})"
    if resp.status_code >= 500:
        return EngineFailed(
            f"{where} failed with HTTP {resp.status_code}: {detail}",
            hint="The remote server failed; check its log and try again.",
        )
    if resp.status_code in (401, 403):
        return ModelUnavailable(
            f"{where} refused the credentials (HTTP {resp.status_code}): {detail}",
            hint="Set the right key in the variable given with --api-key-env, or register the model again.",
        )
    if resp.status_code == 404:
        return ModelUnavailable(
            f"{where} does not serve model {model.served_model!r} (HTTP 404): {detail}",
            hint="Check the served model id (GET BASE_URL/models) and register it again with `--model ID`.",
        )
    return EngineFailed(
        f"{where} rejected the request with HTTP {resp.status_code}: {detail}",
        hint="The remote server does not accept these parameters; check its documentation.",
    )


def create(settings) -> RemoteEngine:
    return RemoteEngine(settings.remote_timeout_s, settings.remote_max_response_bytes, settings.remote_max_line_bytes)
