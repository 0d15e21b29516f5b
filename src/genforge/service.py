"""ContentService: the ONE path a request takes: record -> engine -> validate -> store -> finalize.

A record ends `succeeded` only after the engine ran, the validator passed, the artifact is durable
with its sha256, and the final commit went through. Every other outcome ends `failed` with a typed
error that carries the record's id.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path

from genforge import metrics
from genforge.catalog import ModelCatalog
from genforge.config import Settings
from genforge.credentials import Credentials, describe
from genforge.db import ContentRow, Database
from genforge.engines.base import Emit, GenerationJob
from genforge.errors import (
    Cancelled,
    Conflict,
    GenforgeError,
    NotFound,
)
from genforge.jobs import Job, JobRunner
from genforge.planning import plan
from genforge.schemas import GenerateRequest
from genforge.storage import ArtifactStore, sha256_file
from genforge.validation import validate

log = logging.getLogger("genforge.service")


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(moment: datetime | None) -> str | None:
    """ISO 8601 in UTC; SQLite hands back naive datetimes for what was stored as UTC."""
    if moment is None:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).isoformat()


def record_dict(row: ContentRow) -> dict:
    """The content record every client relies on (see README, 'The content record')."""
    artifact = None
    if row.artifact_sha256:
        artifact = {
            "sha256": row.artifact_sha256,
            "size_bytes": row.artifact_size,
            "media_type": row.artifact_media_type,
            "url": f"/api/v1/content/{row.id}/file",
        }
    error = None
    if row.error_code:
        error = {"code": row.error_code, "message": row.error_message, "hint": row.error_hint}
    rec = {
        "id": row.id,
        "content_type": row.content_type,
        "status": row.status,
        "prompt": row.prompt,
        "system": row.system,
        "quality": row.quality,
        "model": {
            "name": row.model_name,
            "engine": row.model_engine,
            "engine_version": row.engine_version,
            "file_sha256": row.model_sha256,
        },
        "params": row.params,
        "artifact": artifact,
        "timings": {"load_ms": row.load_ms, "generate_ms": row.generate_ms, "total_ms": row.total_ms},
        "created_at": _iso(row.created_at),
        "finished_at": _iso(row.finished_at),
        "error": error,
    }
    if row.content_type == "text":
        rec.update(
            text=row.text,
            finish_reason=row.finish_reason,
            usage={"prompt_tokens": row.prompt_tokens, "completion_tokens": row.completion_tokens},
        )
    extra = dict(row.extra or {})
    extra.pop("credentials_sidecar", None)  # served by GET .../credentials
    if source := extra.pop("model_source", None):
        rec["model"]["source"] = source
    rec["warnings"] = extra.pop("warnings", [])
    rec.update(extra)
    return rec


class ContentService:
    def __init__(
        self, settings: Settings, db: Database, catalog: ModelCatalog, store: ArtifactStore, engines, runner: JobRunner
    ):
        self.settings = settings
        self.db = db
        self.catalog = catalog
        self.store = store
        self.engines = engines  # EngineWorker in production; anything with .generate(job, emit=, cancel=)
        self.runner = runner
        self.credentials = Credentials(settings.data_dir, enabled=settings.credentials != "off")
        if self.credentials.enabled:
            self.credentials.ensure()  # the instance's CA and signing key, made on first start

    # --- the one path ------------------------------------------------------------------------
    def submit(self, req: GenerateRequest) -> Job:
        """Accept a request: plan it, write its `pending` record and queue it (or raise QueueFull)."""
        model_name, params = plan(req, self.settings, self.catalog)
        started = time.perf_counter()
        content_id = str(uuid.uuid4())

        def accept() -> None:
            with self.db.session() as s:
                s.add(
                    ContentRow(
                        id=content_id,
                        content_type=req.content_type,
                        status="pending",
                        prompt=req.prompt,
                        system=req.system,
                        quality=req.quality,
                        params=params,
                        model_name=model_name,
                        extra={},
                        created_at=_now(),
                    )
                )
            log.info("content=%s accepted type=%s model=%s", content_id, req.content_type, model_name)

        def run(job: Job) -> dict:
            return self._execute(content_id, req, model_name, params, started, job)

        return self.runner.submit(content_id, run, on_accept=accept)

    def generate(self, req: GenerateRequest, emit: Emit | None = None, cancel: threading.Event | None = None) -> dict:
        """Submit and wait for the final record; engine events go to `emit` as they happen."""
        job = self.submit(req)
        if emit is not None:
            job.listen(lambda event: event["type"] != "final" and emit(event))
        while not job.done.wait(0.1):
            if cancel is not None and cancel.is_set() and not job.cancel.is_set():
                self.cancel(job.content_id)
        if job.error is not None:
            raise job.error
        return job.result

    def cancel(self, content_id: str, wait: bool = True) -> dict | None:
        """Stop queued or running work; the record ends `cancelled`, without an artifact."""
        job = self.runner.cancel(content_id)
        if job is None:
            rec = self.get(content_id)
            raise Conflict(f"content {content_id} is already {rec['status']}", content_id=content_id)
        if job.state == "queued":  # never started: removed from the queue
            err = Cancelled("cancelled while waiting in the queue", content_id=content_id)
            self._fail(content_id, err.code, err.message, err.hint, time.perf_counter())
            job.finish(None, err)
        if not wait:
            return None
        job.done.wait(timeout=30)  # a running job stops between tokens
        return self.get(content_id)

    def _execute(self, content_id, req, model_name, params, started, job: Job) -> dict:
        try:
            return self._run(content_id, req, model_name, params, started, job.publish, job.cancel)
        except GenforgeError as exc:
            exc.content_id = content_id
            self._fail(content_id, exc.code, exc.message, exc.hint, started)
            raise
        except Exception as exc:
            log.exception("content=%s unexpected failure", content_id)
            err = GenforgeError(f"internal error: {type(exc).__name__}: {exc}", content_id=content_id)
            self._fail(content_id, err.code, err.message, err.hint, started)
            raise err from exc

    def _run(self, content_id, req, model_name, params, started, emit, cancel) -> dict:
        model = self.catalog.resolve(model_name, req.content_type)
        with self.db.session() as s:
            row = s.get(ContentRow, content_id)
            row.status, row.started_at = "running", _now()
            row.model_engine, row.model_sha256 = model.engine, model.sha256
        job = GenerationJob(content_id, req.content_type, model, req.prompt, req.system, params)
        out = self.engines.generate(job, emit=emit, cancel=cancel)
        validate(req.content_type, out, params, req.prompt)
        signed = self.credentials.sign(  # Content Credentials; the signed file is what is stored and hashed
            content_id=content_id,
            content_type=req.content_type,
            media_type=out.media_type,
            data=out.data,
            model=model,
            params=params,
        )
        stored = self.store.write(signed.data, out.media_type)
        try:
            with self.db.session() as s:
                row = s.get(ContentRow, content_id)
                row.status, row.finished_at = "succeeded", _now()
                row.error_code = row.error_message = row.error_hint = None
                row.engine_version = out.engine_version
                row.text, row.finish_reason = out.text, out.finish_reason
                if out.usage:
                    row.prompt_tokens = out.usage.get("prompt_tokens")
                    row.completion_tokens = out.usage.get("completion_tokens")
                row.extra = {**out.extra, **signed.extra, **({"model_source": model.source} if model.source else {})}
                row.artifact_sha256, row.artifact_size = stored.sha256, stored.size_bytes
                row.artifact_media_type, row.artifact_path = stored.media_type, stored.relpath
                row.load_ms, row.generate_ms = round(out.load_ms, 2), round(out.generate_ms, 2)
                row.total_ms = round((time.perf_counter() - started) * 1000, 2)
                result = record_dict(row)
        except Exception:
            if stored.created:  # ours alone: an identical artifact of another record stays
                self.store.remove(stored.relpath)
            raise
        metrics.observe_success(result)
        log.info(
            "content=%s succeeded tokens=%s sha256=%s total_ms=%s",
            content_id,
            (out.usage or {}).get("completion_tokens"),
            stored.sha256[:12],
            result["timings"]["total_ms"],
        )
        return result

    def _fail(self, content_id: str, code: str, message: str, hint: str | None, started: float) -> None:
        log.warning("content=%s failed code=%s: %s", content_id, code, message)
        try:
            with self.db.session() as s:
                row = s.get(ContentRow, content_id)
                metrics.observe_failure(row.content_type, code)
                row.status = "cancelled" if code == "cancelled" else "failed"
                row.error_code, row.error_message, row.error_hint = code, message, hint
                row.finished_at = _now()
                row.total_ms = round((time.perf_counter() - started) * 1000, 2)
        except Exception:
            # The database itself is failing: the record stays unfinished (never `succeeded`);
            # the original error still reaches the caller.
            log.exception("content=%s could not record the failure", content_id)

    # --- reading and deleting ------------------------------------------------------------------
    def get(self, content_id: str) -> dict:
        with self.db.session() as s:
            row = s.get(ContentRow, content_id)
            if row is None:
                raise NotFound(f"no content with id {content_id!r}", field="id")
            rec = record_dict(row)
        if rec["status"] == "pending":
            rec["queue_position"] = self.runner.position(content_id)
        return rec

    def list(
        self, content_type: str | None = None, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> dict:
        with self.db.session() as s:
            q = s.query(ContentRow)
            if content_type:
                q = q.filter(ContentRow.content_type == content_type)
            if status:
                q = q.filter(ContentRow.status == status)
            total = q.count()
            rows = q.order_by(ContentRow.created_at.desc()).offset(offset).limit(limit).all()
            return {"items": [record_dict(r) for r in rows], "total": total, "limit": limit, "offset": offset}

    def artifact(self, content_id: str) -> tuple[Path, str]:
        with self.db.session() as s:
            row = s.get(ContentRow, content_id)
            if row is None:
                raise NotFound(f"no content with id {content_id!r}", field="id")
            if not row.artifact_path:
                raise NotFound(f"content {content_id} has no file (status {row.status})", field="id")
            path = self.store.resolve(row.artifact_path)
            if not path.is_file():
                raise NotFound(
                    f"the file of content {content_id} is missing from the data directory",
                    hint="It was removed outside genforge; the record keeps its sha256.",
                )
            return path, row.artifact_media_type

    def delete(self, content_id: str) -> None:
        with self.db.session() as s:
            row = s.get(ContentRow, content_id)
            if row is None:
                raise NotFound(f"no content with id {content_id!r}", field="id")
            relpath = row.artifact_path
            s.delete(row)
            shared = (
                relpath
                and s.query(ContentRow).filter(ContentRow.artifact_path == relpath, ContentRow.id != content_id).count()
            )
        if relpath and not shared:
            self.store.remove(relpath)
        log.info("content=%s deleted", content_id)

    def recover(self) -> dict:
        """After a crash: records left pending/running end `failed` (code `interrupted`), and artifact
        files no record refers to (written just before a crash, or temp files) are removed."""
        with self.db.session() as s:
            stale = s.query(ContentRow).filter(ContentRow.status.in_(["pending", "running"])).all()
            for row in stale:
                row.error_message = f"the server stopped while this generation was {row.status}"
                row.status, row.finished_at = "failed", _now()
                row.error_code = "interrupted"
                row.error_hint = "Submit the request again."
            referenced = {r for (r,) in s.query(ContentRow.artifact_path).filter(ContentRow.artifact_path.isnot(None))}
        orphans = [
            p
            for p in self.store.root.rglob("*")
            if p.is_file() and str(p.relative_to(self.store.root)) not in referenced
        ]
        for path in orphans:
            path.unlink(missing_ok=True)
        if stale or orphans:
            log.warning(
                "recovered: %d interrupted record(s) marked failed, %d orphan file(s) removed", len(stale), len(orphans)
            )
        return {"interrupted": [r.id for r in stale], "orphans_removed": len(orphans)}

    def credentials_of(self, content_id: str) -> dict:
        path, media_type = self.artifact(content_id)
        with self.db.session() as s:
            extra = dict(s.get(ContentRow, content_id).extra or {})
        return describe(self.credentials, content_id, extra, path.read_bytes(), media_type)

    def find_by_content_hash(self, digest: str) -> list[dict]:
        """Succeeded records whose decoded pixels or samples hash to `digest` (a file stripped of metadata)."""
        with self.db.session() as s:
            rows = s.query(ContentRow).filter(
                ContentRow.status == "succeeded", ContentRow.extra["content_hash"].as_string() == digest
            )
            return [record_dict(r) for r in rows]

    def sidecar_of(self, content_id: str) -> dict | None:
        with self.db.session() as s:
            row = s.get(ContentRow, content_id)
            return (row.extra or {}).get("credentials_sidecar") if row else None

    def find_by_file(self, path: Path) -> tuple[str, list[dict]]:
        """(sha256 of the file, the succeeded records whose artifact it is)."""
        digest = sha256_file(path)
        with self.db.session() as s:
            rows = (
                s.query(ContentRow).filter(ContentRow.artifact_sha256 == digest, ContentRow.status == "succeeded").all()
            )
            return digest, [record_dict(r) for r in rows]
