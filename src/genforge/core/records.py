"""The content record store: the ONLY writer of content rows.

Every status change is a compare-and-set over `TRANSITIONS`: the row moves only from a status the caller names,
and (for the moves of a run) only while the record is still that run's, so two writers can never both win:
a cancel and a start, a reaper's re-queue and a worker's late success. The row's `extra` JSON holds declared keys
only (`RecordExtra`, plus the content type's facts), so what a record carries is written down in one place.

`ContentRecordStore` is the interface the core and the distributed runner use; `SqlContentRecords` implements it
with SQLAlchemy over SQLite or PostgreSQL (the same queries on both).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol, TypedDict, cast

from pydantic import BaseModel, Field
from sqlalchemy import ColumnElement, CursorResult, Result, func, insert, select, update

from genforge.contenttypes import REGISTRY, ContentRecord
from genforge.contenttypes.records import Artifact, ModelInfo, RecordError, Status, Timings
from genforge.errors import GenforgeError, NotFound
from genforge.stores.db import ContentRow, Database
from genforge.stores.search import search_for

# Which status a record may move to from each status. `interrupted` is not a status: a record the server stopped
# ends `failed` with the error code `interrupted`.
TRANSITIONS: dict[Status, frozenset[Status]] = {
    "pending": frozenset({"running", "cancelled", "failed"}),
    # back to pending: the distributed mode's reaper re-queues a record whose worker was lost
    "running": frozenset({"succeeded", "failed", "cancelled", "pending"}),
    "succeeded": frozenset({"failed"}),  # `genforge audit` found its file lost or changed
    "failed": frozenset(),
    "cancelled": frozenset(),
}
UNFINISHED: tuple[Status, ...] = ("pending", "running")


class InvalidTransition(GenforgeError):
    """A writer asked for a move the transition table does not allow: a bug in genforge, never a user's error."""


class RecordExtra(TypedDict, total=False):
    """The declared keys of a record's `extra` JSON (the content type's facts are its other keys)."""

    # controls the planner made, which a worker needs to run the same plan (core/service.py, distributed/)
    messages: list[dict[str, Any]]
    raw: bool
    fallback_reason: str
    persona: dict[str, Any]
    policy: dict[str, Any]
    inputs: dict[str, list[str]]
    identity_policy: dict[str, Any]  # a persona's face policy (engines.base.IdentityPolicy)
    # what the run added
    attempts: list[dict[str, Any]]
    warnings: list[str]
    credentials: dict[str, Any]
    credentials_sidecar: dict[str, Any]
    model: dict[str, Any]  # a remote model's base URL and served id; an engine's provenance
    model_source: str


def _declared_keys() -> frozenset[str]:
    keys = set(RecordExtra.__annotations__)
    for spec in REGISTRY.values():
        keys.update(spec.facts.model_fields)
    return frozenset(keys)


EXTRA_KEYS = _declared_keys()


def checked_extra(extra: dict[str, Any]) -> dict[str, Any]:
    """`extra` if every key is declared; an undeclared key is a bug, refused before it is written."""
    unknown = set(extra) - EXTRA_KEYS
    if unknown:
        raise InvalidTransition(f"undeclared record extra key(s): {', '.join(sorted(unknown))}")
    return extra


def _status(value: str) -> Status:
    """A stored status as the Status it was written as (only this store writes it, from TRANSITIONS)."""
    for status in TRANSITIONS:
        if status == value:
            return status
    raise InvalidTransition(f"a content row has the unknown status {value!r}")


def _rowcount(result: Result[Any]) -> int:
    """The rows an UPDATE matched (an UPDATE's result is a CursorResult, which counts them)."""
    return cast(CursorResult[Any], result).rowcount


def now() -> datetime:
    return datetime.now(UTC)


def _db_time(moment: datetime) -> datetime:
    """A filter bound as stored: UTC (naive input is taken as UTC)."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def to_record(row: ContentRow, queue_position: int | None = None) -> ContentRecord:
    """The typed content record of a stored row: the common fields, then its content type's section."""
    spec = REGISTRY[row.content_type]
    extra: dict[str, Any] = row.extra or {}
    artifact = None
    if row.artifact_sha256:
        artifact = Artifact(
            sha256=row.artifact_sha256,
            size_bytes=row.artifact_size or 0,
            media_type=row.artifact_media_type or "application/octet-stream",
            url=f"/api/v1/content/{row.id}/file",
        )
    error = RecordError(code=row.error_code, message=row.error_message, hint=row.error_hint) if row.error_code else None
    common = {
        "id": row.id,
        "content_type": row.content_type,
        "status": row.status,
        "prompt": row.prompt,
        "system": row.system,
        "quality": row.quality,
        "model": ModelInfo(
            name=row.model_name,
            engine=row.model_engine,
            engine_version=row.engine_version,
            file_sha256=row.model_sha256,
            source=extra.get("model_source"),
            **extra.get("model", {}),
        ),
        "params": row.params,
        "artifact": artifact,
        "timings": Timings(load_ms=row.load_ms, generate_ms=row.generate_ms, total_ms=row.total_ms),
        "created_at": row.created_at,
        "finished_at": row.finished_at,
        "error": error,
        "warnings": extra.get("warnings", []),
        "queue_position": queue_position,
        "owner": row.owner,
        "credentials": extra.get("credentials"),
        "persona": extra.get("persona"),
        "attempts": extra.get("attempts", []),
    }
    record = spec.record.model_validate({**common, **spec.record_section(row)})
    return cast(ContentRecord, record)  # spec.record is the section's class of this content type


class ContentPage(BaseModel):
    """A page of records, newest first."""

    items: list[ContentRecord]
    total: int
    limit: int
    offset: int


@dataclass(frozen=True)
class PendingRecord:
    """What `accept` writes: a planned request, before it runs."""

    id: str
    content_type: str
    prompt: str
    system: str | None
    quality: str
    params: dict[str, Any]
    model_name: str | None
    extra: RecordExtra
    owner: str | None
    persona_name: str | None
    persona_version: int | None


@dataclass(frozen=True)
class Outcome:
    """What the final commit of a succeeded run writes."""

    params: dict[str, Any]
    engine_version: str | None
    engine: str | None
    text: str | None
    finish_reason: str | None
    prompt_tokens: int | None
    completion_tokens: int | None
    extra: dict[str, Any]  # the facts, the credentials, the model's provenance (merged into the row's extra)
    artifact_sha256: str
    artifact_size: int
    artifact_media_type: str
    artifact_path: str
    load_ms: float
    generate_ms: float
    total_ms: float


@dataclass(frozen=True)
class StoredFile:
    """A record's artifact as recorded: where it is (relative to the artifact root) and what it must be."""

    content_id: str
    content_type: str
    status: Status
    owner: str | None
    relpath: str | None
    sha256: str | None
    size_bytes: int | None
    media_type: str | None
    extra: dict[str, Any]


@dataclass(frozen=True)
class Lease:
    """A running record a worker took, as the reaper sees it."""

    content_id: str
    content_type: str
    run: int


class ContentRecordStore(Protocol):
    """The content rows, read and written only through here (see the module's docstring)."""

    def accept(self, record: PendingRecord) -> None: ...
    def start(self, content_id: str, run: int | None, values: dict[str, Any]) -> int: ...
    def take(self, content_id: str) -> tuple[ContentRow, int] | None: ...
    def note_attempts(self, content_id: str, attempts: list[dict[str, Any]]) -> None: ...
    def succeed(self, content_id: str, run: int, outcome: Outcome) -> ContentRecord | None: ...
    def finish(
        self, content_id: str, status: Status, err: GenforgeError, run: int | None = None, **values: Any
    ) -> bool: ...
    def cancel_pending(self, content_id: str, err: GenforgeError) -> bool: ...
    def requeue(self, content_id: str, run: int) -> bool: ...
    def get(self, content_id: str, position: int | None = None) -> ContentRecord: ...
    def status_of(self, content_id: str) -> tuple[Status, str | None] | None: ...
    def statuses(self, ids: Sequence[str]) -> dict[str, Status]: ...
    def file_of(self, content_id: str) -> StoredFile: ...
    def page(self, conds: list[ColumnElement[bool]], q: str | None, limit: int, offset: int) -> ContentPage: ...
    def delete(self, content_id: str) -> str | None: ...
    def running_leases(self) -> list[Lease]: ...
    def count(self, status: Status, content_type: str | None = None, before: datetime | None = None) -> int: ...
    def interrupt_unfinished(self) -> list[str]: ...
    def succeeded_files(self) -> list[StoredFile]: ...
    def referenced_paths(self) -> set[str]: ...


class SqlContentRecords:
    """ContentRecordStore on SQLAlchemy (SQLite or PostgreSQL)."""

    def __init__(self, db: Database):
        self.db = db
        self.search = search_for(db.url)

    # --- the moves -----------------------------------------------------------------------------------
    def _move(
        self,
        content_id: str,
        to: Status,
        expect: Iterable[Status],
        run: int | None = None,
        **values: Any,
    ) -> bool:
        """Compare-and-set: `content_id` moves to `to` only from one of `expect` (and only while it is run `run`,
        when given). True when this call moved it."""
        expect = tuple(expect)
        for status in expect:
            if to != status and to not in TRANSITIONS[status]:
                raise InvalidTransition(f"content {content_id}: {status} -> {to} is not a transition")
        conds = [ContentRow.id == content_id, ContentRow.status.in_(expect)]
        if run is not None:
            conds.append(ContentRow.runs == run)
        with self.db.transaction() as conn:  # a bare statement: the hot path's writes skip the ORM
            result = conn.execute(update(ContentRow).where(*conds).values(status=to, **values))
            return bool(_rowcount(result))

    def accept(self, record: PendingRecord) -> None:
        row = {
            "id": record.id,
            "content_type": record.content_type,
            "status": "pending",
            "prompt": record.prompt,
            "system": record.system,
            "quality": record.quality,
            "params": record.params,
            "model_name": record.model_name,
            "extra": checked_extra(dict(record.extra)),
            "created_at": now(),
            "owner": record.owner,
            "persona_name": record.persona_name,
            "persona_version": record.persona_version,
            "runs": 0,
        }
        with self.db.transaction() as conn:
            conn.execute(insert(ContentRow), [row])

    def start(self, content_id: str, run: int | None, values: dict[str, Any]) -> int:
        """The engine has the job: with `run` None (the embedded runner) the record moves pending -> running as
        run 1; with a run (a worker took it already, `take`) its running details are written while it is still
        that run. `values` may carry `extra_model` (merged into extra["model"]). The run number, or raises
        NotFound when the record is no longer this job's (cancelled, deleted, or taken by another run)."""
        model = values.pop("extra_model", None)
        with self.db.transaction() as conn:
            this = ContentRow.id == content_id
            if model is not None:
                extra = conn.execute(select(ContentRow.extra).where(this)).scalar_one_or_none() or {}
                values["extra"] = checked_extra({**extra, "model": {**extra.get("model", {}), **model}})
            if run is None:
                moved = conn.execute(
                    update(ContentRow)
                    .where(this, ContentRow.status == "pending")
                    .values(status="running", runs=ContentRow.runs + 1, **values)
                ).rowcount
                if moved:
                    return int(conn.execute(select(ContentRow.runs).where(this)).scalar_one())
            elif conn.execute(
                update(ContentRow).where(this, ContentRow.status == "running", ContentRow.runs == run).values(**values)
            ).rowcount:
                return run
        raise NotFound(f"content {content_id} is no longer this job's to run (cancelled, deleted or re-queued)")

    def take(self, content_id: str) -> tuple[ContentRow, int] | None:
        """A worker's claim (distributed mode): pending -> running as the next run, only if this call wins it.
        (the row, its run number), or None."""
        with self.db.session() as s:
            won = _rowcount(
                s.execute(
                    update(ContentRow)
                    .where(ContentRow.id == content_id, ContentRow.status == "pending")
                    .values(status="running", started_at=now(), runs=ContentRow.runs + 1)
                )
            )
            if not won:
                return None
            row = s.get(ContentRow, content_id)
            if row is None:
                return None
            s.expunge(row)
            return row, row.runs

    def note_attempts(self, content_id: str, attempts: list[dict[str, Any]]) -> None:
        with self.db.session() as s:
            row = s.get(ContentRow, content_id)
            if row is not None:
                row.extra = checked_extra({**(row.extra or {}), "attempts": list(attempts)})

    def succeed(self, content_id: str, run: int, outcome: Outcome) -> ContentRecord | None:
        """The final commit: running -> succeeded, only while the record is still run `run`. The record, or None
        when it is not this run's any more (cancelled, re-queued to another worker, deleted)."""
        with self.db.session() as s:
            row = s.get(ContentRow, content_id)
            if row is None or row.status != "running" or row.runs != run:
                return None
            extra = {**(row.extra or {}), **outcome.extra}
            values = {
                "status": "succeeded",
                "finished_at": now(),
                "params": outcome.params,
                "error_code": None,
                "error_message": None,
                "error_hint": None,
                "engine_version": outcome.engine_version,
                "model_engine": outcome.engine or row.model_engine,
                "text": outcome.text,
                "finish_reason": outcome.finish_reason,
                "prompt_tokens": outcome.prompt_tokens,
                "completion_tokens": outcome.completion_tokens,
                "extra": checked_extra(extra),
                "artifact_sha256": outcome.artifact_sha256,
                "artifact_size": outcome.artifact_size,
                "artifact_media_type": outcome.artifact_media_type,
                "artifact_path": outcome.artifact_path,
                "load_ms": round(outcome.load_ms, 2),
                "generate_ms": round(outcome.generate_ms, 2),
                "total_ms": round(outcome.total_ms, 2),
            }
            moved = _rowcount(
                s.execute(
                    update(ContentRow)
                    .where(ContentRow.id == content_id, ContentRow.status == "running", ContentRow.runs == run)
                    .values(**values)
                )
            )
            if not moved:
                return None
            s.refresh(row)
            return to_record(row)

    def finish(
        self, content_id: str, status: Status, err: GenforgeError, run: int | None = None, **values: Any
    ) -> bool:
        """pending/running -> failed or cancelled, with the error (and only while run `run`, when given)."""
        return self._move(
            content_id,
            status,
            UNFINISHED,
            run,
            error_code=err.code,
            error_message=err.message,
            error_hint=err.hint,
            finished_at=now(),
            **values,
        )

    def cancel_pending(self, content_id: str, err: GenforgeError) -> bool:
        """pending -> cancelled, with its error, only if it has not been taken to run (a worker's take races it)."""
        return self._move(
            content_id,
            "cancelled",
            ("pending",),
            error_code=err.code,
            error_message=err.message,
            error_hint=err.hint,
            finished_at=now(),
        )

    def requeue(self, content_id: str, run: int) -> bool:
        """A lost worker's run goes back to pending (its next take is run+1, so its late success is refused)."""
        return self._move(content_id, "pending", ("running",), run, started_at=None)

    def lose_file(self, content_id: str, err: GenforgeError) -> bool:
        """succeeded -> failed: `genforge audit --mark` found its file lost, changed or outside the artifact root;
        the record no longer names an artifact (nothing will serve it)."""
        return self._move(
            content_id,
            "failed",
            ("succeeded",),
            error_code=err.code,
            error_message=err.message,
            error_hint=err.hint,
            artifact_sha256=None,
            artifact_size=None,
            artifact_media_type=None,
            artifact_path=None,
        )

    def interrupt_unfinished(self) -> list[str]:
        """After a crash (embedded mode): records left pending/running end failed with `interrupted`."""
        with self.db.session() as s:
            stale = s.query(ContentRow).filter(ContentRow.status.in_(UNFINISHED)).all()
            for row in stale:
                row.error_message = f"the server stopped while this generation was {row.status}"
                row.status, row.finished_at = "failed", now()
                row.error_code = "interrupted"
                row.error_hint = "Submit the request again."
            return [r.id for r in stale]

    # --- reading -----------------------------------------------------------------------------------
    def get(self, content_id: str, position: int | None = None) -> ContentRecord:
        with self.db.session() as s:
            row = s.get(ContentRow, content_id)
            if row is None:
                raise NotFound(f"no content with id {content_id!r}", field="id")
            return to_record(row, position)

    def status_of(self, content_id: str) -> tuple[Status, str | None] | None:
        """(status, owner) of a record, or None when there is none."""
        with self.db.connection() as conn:
            found = conn.execute(select(ContentRow.status, ContentRow.owner).where(ContentRow.id == content_id)).first()
        return None if found is None else (_status(found[0]), found[1])

    def statuses(self, ids: Sequence[str]) -> dict[str, Status]:
        if not ids:
            return {}
        with self.db.connection() as conn:
            rows = conn.execute(select(ContentRow.id, ContentRow.status).where(ContentRow.id.in_(list(ids))))
            return {content_id: _status(status) for content_id, status in rows}

    def file_of(self, content_id: str) -> StoredFile:
        with self.db.session() as s:
            row = s.get(ContentRow, content_id)
            if row is None:
                raise NotFound(f"no content with id {content_id!r}", field="id")
            return StoredFile(
                content_id=row.id,
                content_type=row.content_type,
                status=_status(row.status),
                owner=row.owner,
                relpath=row.artifact_path,
                sha256=row.artifact_sha256,
                size_bytes=row.artifact_size,
                media_type=row.artifact_media_type,
                extra=dict(row.extra or {}),
            )

    def page(self, conds: list[ColumnElement[bool]], q: str | None, limit: int, offset: int) -> ContentPage:
        """Records newest first; `q` a full-text search over prompt and text (stores/search.py)."""
        with self.db.session() as s:
            found = self.search.page(s, q, conds, limit, offset) if q else None
            if found is None:
                total = s.scalar(select(func.count()).select_from(ContentRow).where(*conds)) or 0
                newest = select(ContentRow).where(*conds).order_by(ContentRow.created_at.desc())
                found = total, list(s.scalars(newest.offset(offset).limit(limit)).all())
            total, rows = found
            return ContentPage(items=[to_record(r) for r in rows], total=total, limit=limit, offset=offset)

    def filters(
        self,
        owner: str | None,
        content_type: str | None = None,
        status: str | None = None,
        model: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> list[ColumnElement[bool]]:
        conds: list[ColumnElement[bool]] = []
        if owner:
            conds.append(ContentRow.owner == owner)
        if content_type:
            conds.append(ContentRow.content_type == content_type)
        if status:
            conds.append(ContentRow.status == status)
        if model:
            conds.append(ContentRow.model_name == model)
        if created_after:
            conds.append(ContentRow.created_at >= _db_time(created_after))
        if created_before:
            conds.append(ContentRow.created_at < _db_time(created_before))
        return conds

    def find(self, *, content_hash: str | None = None, artifact_sha256: str | None = None) -> list[ContentRecord]:
        """Succeeded records whose decoded content hashes to `content_hash`, or whose file is `artifact_sha256`."""
        with self.db.session() as s:
            q = s.query(ContentRow).filter(ContentRow.status == "succeeded")
            if content_hash is not None:
                q = q.filter(ContentRow.extra["content_hash"].as_string() == content_hash)
            if artifact_sha256 is not None:
                q = q.filter(ContentRow.artifact_sha256 == artifact_sha256)
            return [to_record(r) for r in q]

    def count(self, status: Status, content_type: str | None = None, before: datetime | None = None) -> int:
        conds = [ContentRow.status == status]
        if content_type is not None:
            conds.append(ContentRow.content_type == content_type)
        if before is not None:
            conds.append(ContentRow.created_at < before)
        with self.db.connection() as conn:
            return int(conn.execute(select(func.count(ContentRow.id)).where(*conds)).scalar_one())

    def created_at(self, content_id: str) -> tuple[str, datetime] | None:
        """(content type, created_at) of a pending record: its place in the distributed queue."""
        with self.db.connection() as conn:
            found = conn.execute(
                select(ContentRow.content_type, ContentRow.created_at).where(
                    ContentRow.id == content_id, ContentRow.status == "pending"
                )
            ).first()
        return None if found is None else (found[0], found[1])

    def running_leases(self) -> list[Lease]:
        with self.db.connection() as conn:
            rows = conn.execute(
                select(ContentRow.id, ContentRow.content_type, ContentRow.runs).where(ContentRow.status == "running")
            )
            return [Lease(content_id, content_type, runs) for content_id, content_type, runs in rows]

    def succeeded_files(self) -> list[StoredFile]:
        """Every succeeded record's artifact as recorded (for `genforge audit`)."""
        with self.db.session() as s:
            rows = s.query(ContentRow).filter(ContentRow.status == "succeeded").all()
            return [
                StoredFile(
                    content_id=r.id,
                    content_type=r.content_type,
                    status="succeeded",
                    owner=r.owner,
                    relpath=r.artifact_path,
                    sha256=r.artifact_sha256,
                    size_bytes=r.artifact_size,
                    media_type=r.artifact_media_type,
                    extra={},
                )
                for r in rows
            ]

    def referenced_paths(self) -> set[str]:
        with self.db.connection() as conn:
            rows = conn.execute(select(ContentRow.artifact_path).where(ContentRow.artifact_path.isnot(None)))
            return {path for (path,) in rows if path is not None}

    # --- deleting --------------------------------------------------------------------------------------
    def delete(self, content_id: str) -> str | None:
        """Delete the row; the artifact path to remove (None when another record still shares the file). Call it
        under the artifact store's guard, and remove the file under the same guard."""
        with self.db.session() as s:
            row = s.get(ContentRow, content_id)
            if row is None:
                raise NotFound(f"no content with id {content_id!r}", field="id")
            relpath = row.artifact_path
            s.delete(row)
            shared = relpath and (
                s.query(ContentRow).filter(ContentRow.artifact_path == relpath, ContentRow.id != content_id).count()
            )
        return relpath if relpath and not shared else None


class ArtifactCheck(BaseModel):
    """A record's file re-hashed (POST /api/v1/content/{id}/verify)."""

    id: str
    intact: bool = Field(description="The file exists with the recorded sha256 and size.")
    expected_sha256: str
    expected_size_bytes: int
    sha256: str | None = None
    size_bytes: int | None = None
    detail: str


def elapsed_ms(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 2)


__all__ = [
    "TRANSITIONS",
    "ArtifactCheck",
    "ContentPage",
    "ContentRecordStore",
    "Lease",
    "Outcome",
    "PendingRecord",
    "RecordExtra",
    "SqlContentRecords",
    "StoredFile",
    "to_record",
]
