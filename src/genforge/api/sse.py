"""Server-Sent Events for a job: its engine events as they happen, then exactly one final event."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from fastapi.concurrency import run_in_threadpool

from genforge.jobs import Job
from genforge.service import ContentService


def sse(event: str, data: dict) -> str:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n"


def final_event(record: dict) -> str:
    """`done` carries a succeeded record; anything else ends with `failed` (its record says why)."""
    return sse("done" if record["status"] == "succeeded" else "failed", record)


async def job_events(svc: ContentService, job: Job, cancel_on_disconnect: bool) -> AsyncIterator[str]:
    """Replay and follow a job's events. A client that leaves a synchronous stream cancels its job."""
    events = job.listen_async()
    try:
        while True:
            event = await events.get()
            if event["type"] == "final":
                record = job.result or await run_in_threadpool(svc.get, job.content_id)
                yield final_event(record)
                return
            yield sse(event["type"], {k: v for k, v in event.items() if k != "type"})
    finally:
        if cancel_on_disconnect and not job.done.is_set():
            svc.cancel(job.content_id, wait=False)
