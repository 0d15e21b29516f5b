"""Following a job over HTTP: one loop for both streaming APIs (the native SSE and OpenAI's chunks).

`follow()` replays and follows a job's events and ends with its final record or error; each API renders
those as its own frames. A client that leaves a synchronous stream cancels its job.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import suppress
from dataclasses import dataclass

from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from genforge.contenttypes import ContentRecord
from genforge.contenttypes.request import GenerateRequest
from genforge.core.caller import Caller
from genforge.core.jobs import Job
from genforge.core.service import ContentService
from genforge.errors import Conflict, GenforgeError

SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
# How the schema declares a stream: each event is an `event:` name (the native API; /v1 sends none) and its
# `data:` (JSON, or [DONE] at the end of an OpenAI stream).
SSE_DOC = {
    "text/event-stream": {
        "schema": {
            "type": "object",
            "properties": {
                "event": {"type": "string", "enum": ["token", "progress", "done", "failed"]},
                "data": {"type": "string", "description": "The event's JSON."},
            },
            "required": ["data"],
        }
    }
}


@dataclass
class Final:
    """The end of a job: its record (succeeded, failed or cancelled) and, unless it succeeded, its error."""

    record: ContentRecord
    error: GenforgeError | None


async def follow(
    svc: ContentService, job: Job, caller: Caller, cancel_on_disconnect: bool
) -> AsyncIterator[dict | Final]:
    """The job's engine events (token, progress) as they happen, then exactly one Final."""
    ended = False  # the final event came: Job.finish publishes it just before it sets job.done
    try:
        with job.events_async() as events:  # a client that leaves takes its listener with it
            while True:
                event = await events.get()
                if event["type"] == "final":
                    ended = True
                    break
                yield event
        record = job.result if job.result is not None else await run_in_threadpool(svc.get, job.content_id, caller)
        yield Final(record, job.error)
    finally:
        if cancel_on_disconnect and not ended and not job.done.is_set():
            with suppress(Conflict):  # it finished on its own while the client left: nothing to stop
                svc.cancel(job.content_id, caller, wait=False)


async def generate_sync(svc: ContentService, req: GenerateRequest, caller: Caller) -> ContentRecord:
    """A synchronous generation: accepted on a pool thread (a short database write), then awaited on the event
    loop. A pool thread held for the whole run would let ~40 slow generations stall every route that needs one
    (the key check, reads, /readyz)."""
    job = await run_in_threadpool(svc.submit, req, caller)
    record: ContentRecord = await job.outcome()
    return record


def sse(event: str, data: str) -> str:
    return f"event: {event}\ndata: {data}\n\n"


def final_event(record: ContentRecord) -> str:
    """`done` carries a succeeded record; anything else ends with `failed` (its record says why)."""
    return sse("done" if record.status == "succeeded" else "failed", record.model_dump_json())


async def native_events(
    svc: ContentService, job: Job, caller: Caller, cancel_on_disconnect: bool
) -> AsyncIterator[str]:
    async for item in follow(svc, job, caller, cancel_on_disconnect):
        if isinstance(item, Final):
            yield final_event(item.record)
        else:
            yield sse(item["type"], json.dumps({k: v for k, v in item.items() if k != "type"}))


def event_stream(frames: AsyncIterator[str], content_id: str | None = None, status: int = 200) -> StreamingResponse:
    headers = {**SSE_HEADERS, **({"X-Genforge-Content-Id": content_id} if content_id else {})}
    return StreamingResponse(frames, status_code=status, media_type="text/event-stream", headers=headers)
