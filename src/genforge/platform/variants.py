"""Variants: n results of one request with distinct recorded seeds, under one batch id.

With a seed s the variants get s, s+1, ... (each reproducible alone: send its record's params again); without
one, n distinct seeds are drawn. All are submitted before any is awaited, so text variants are decoded together
in one batch by the llama.cpp engine. The batch is `succeeded` only when every variant is; otherwise the first
failure is raised with the batch id in it, and GET /api/v1/batches/{id} shows every item.
"""

from __future__ import annotations

import secrets
import uuid
from datetime import UTC, datetime

from pydantic import BaseModel, Field

from genforge.contenttypes import ContentRecord
from genforge.contenttypes.request import GenerateRequest
from genforge.core.caller import Caller
from genforge.core.jobs import Job
from genforge.core.service import ContentService
from genforge.engines.params import SEED_LIMIT
from genforge.errors import GenforgeError, InvalidRequest, NotFound
from genforge.stores.db import BatchRow

SEEDED = ("text", "image")  # speech cannot vary by seed (see SpeechParams), a video has none


class Batch(BaseModel):
    batch_id: str
    items: list[ContentRecord] = Field(description="One record per variant, in seed order.")


def seeds_for(n: int, given: int | None) -> list[int]:
    if given is not None:
        return [(given + i) % SEED_LIMIT for i in range(n)]
    drawn: list[int] = []
    while len(drawn) < n:
        seed = secrets.randbelow(2**31)
        if seed not in drawn:
            drawn.append(seed)
    return drawn


def generate(svc: ContentService, req: GenerateRequest, caller: Caller) -> Batch:
    """Submit the variants as `caller`, wait for each, and answer the batch (or the first failure, with the batch
    id). Each variant goes through the core's one path, so each is authorized on its final plan."""
    batch_id, jobs = submit(svc, req, caller)
    first_error = None
    for job in jobs:
        try:
            svc.wait(job)
        except GenforgeError as exc:
            first_error = first_error or exc
    return finish(svc, batch_id, first_error, caller)


def submit(svc: ContentService, req: GenerateRequest, caller: Caller) -> tuple[str, list[Job]]:
    """Queue every variant (all before any is awaited) and record the batch, owned by `caller`: (its id, the
    variants' jobs)."""
    if req.content_type not in SEEDED:
        raise InvalidRequest(
            f"variants: {req.content_type} cannot vary by seed; variants are for {' and '.join(SEEDED)}",
            field="variants",
        )
    if req.stream or req.mode == "async":
        raise InvalidRequest("variants: answered as one batch; send neither stream nor mode: async", field="variants")
    given = req.params.get("seed")
    if given is not None and not isinstance(given, int):
        raise InvalidRequest("params.seed: must be an integer", field="params.seed")
    jobs = []
    try:
        for seed in seeds_for(req.variants or 1, given):
            variant = req.model_copy(update={"variants": None, "params": {**req.params, "seed": seed}})
            jobs.append(svc.submit(variant, caller))
    except GenforgeError:  # e.g. the queue filled up: the variants already queued are withdrawn
        for job in jobs:
            svc.cancel(job.content_id, caller, wait=False)
        raise
    batch_id = str(uuid.uuid4())
    with svc.db.session() as s:
        s.add(
            BatchRow(
                id=batch_id,
                content_type=req.content_type,
                item_ids=[j.content_id for j in jobs],
                created_at=datetime.now(UTC),
                owner=caller.id,
            )
        )
    return batch_id, jobs


def finish(svc: ContentService, batch_id: str, first_error: GenforgeError | None, caller: Caller) -> Batch:
    """The batch once every variant ended: its records, or the first failure raised with the batch id in it."""
    if first_error is not None:
        first_error.details = {**first_error.details, "batch_id": batch_id}
        raise first_error
    return get(svc, batch_id, caller)


def get(svc: ContentService, batch_id: str, caller: Caller) -> Batch:
    """The batch, if the caller may see it (the key that made it, or an admin); otherwise 404."""
    with svc.db.session() as s:
        row = s.get(BatchRow, batch_id)
        if row is None or not caller.owns(row.owner):
            raise NotFound(f"no batch with id {batch_id!r}", field="id")
        ids = list(row.item_ids)
    return Batch(batch_id=batch_id, items=[svc.get(i, caller) for i in ids])
