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
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from datetime import UTC, datetime
from pathlib import Path

from pydantic import BaseModel, Field
from sqlalchemy import func, insert, select, update

from genforge import metrics
from genforge.catalog import ModelCatalog
from genforge.config import Settings
from genforge.contenttypes import REGISTRY, ContentRecord, Plan, spec_of
from genforge.contenttypes.base import SEED_LIMIT
from genforge.credentials import Credentials, describe
from genforge.db import ContentRow, Database
from genforge.engines.base import Emit, GenerationJob, TextPolicy, VideoInputs
from genforge.errors import (
    ArtifactChanged,
    ArtifactLost,
    Cancelled,
    Conflict,
    DatabaseUnavailable,
    GenforgeError,
    Interrupted,
    InvalidOutput,
    InvalidRequest,
    NotFound,
    PolicyViolation,
)
from genforge.jobs import Job, JobRunner
from genforge.limits import check_limits
from genforge.personas import PersonaStore, apply
from genforge.records import Artifact, ModelInfo, RecordError, Status, Timings
from genforge.redact import redact_url
from genforge.schemas import GenerateRequest
from genforge.search import search_for
from genforge.storage import ArtifactStore, sha256_file

log = logging.getLogger("genforge.service")
CANCEL_WAIT_S = 15.0  # how long a job told to stop at shutdown may take to record that it stopped
SUCCESS_COMMIT_RETRY_S = 30.0  # how long a finished generation waits for a locked database before it fails


def _now() -> datetime:
    return datetime.now(UTC)


def _db_time(moment: datetime) -> datetime:
    """A filter bound as stored: UTC (naive input is taken as UTC)."""
    return moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)


def to_record(row: ContentRow, queue_position: int | None = None) -> ContentRecord:
    """The typed content record of a stored row: the common fields, then its content type's section."""
    spec = REGISTRY[row.content_type]
    artifact = None
    if row.artifact_sha256:
        artifact = Artifact(
            sha256=row.artifact_sha256,
            size_bytes=row.artifact_size,
            media_type=row.artifact_media_type,
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
            source=(row.extra or {}).get("model_source"),
            **(row.extra or {}).get("model", {}),
        ),
        "params": row.params,
        "artifact": artifact,
        "timings": Timings(load_ms=row.load_ms, generate_ms=row.generate_ms, total_ms=row.total_ms),
        "created_at": row.created_at,
        "finished_at": row.finished_at,
        "error": error,
        "warnings": (row.extra or {}).get("warnings", []),
        "queue_position": queue_position,
        "owner": row.owner,
        "credentials": (row.extra or {}).get("credentials"),
        "persona": (row.extra or {}).get("persona"),
        "attempts": (row.extra or {}).get("attempts", []),
    }
    return spec.record.model_validate({**common, **spec.record_section(row)})


class ContentPage(BaseModel):
    """A page of records, newest first."""

    items: list[ContentRecord]
    total: int
    limit: int
    offset: int


class ArtifactCheck(BaseModel):
    """A record's file re-hashed (POST /api/v1/content/{id}/verify)."""

    id: str
    intact: bool = Field(description="The file exists with the recorded sha256 and size.")
    expected_sha256: str
    expected_size_bytes: int
    sha256: str | None = None
    size_bytes: int | None = None
    detail: str


@dataclass(frozen=True)
class Accepted:
    """A request that passed planning: its id, its plan, and the clock it started on."""

    content_id: str
    request: GenerateRequest
    plan: Plan
    started: float


class ContentService:
    def __init__(
        self, settings: Settings, db: Database, catalog: ModelCatalog, store: ArtifactStore, engines, runner: JobRunner
    ):
        self.settings = settings
        self.db = db
        self.catalog = catalog
        self.store = store
        self.engines = engines  # EnginePool in production; anything with .generate(job, emit=, cancel=)
        self.runner = runner
        self.closing = False  # set when the runtime shuts down: database retries give up
        self.search = search_for(db.url)
        self.personas = PersonaStore(db)
        self.credentials = Credentials(settings.data_dir, enabled=settings.credentials != "off")
        if self.credentials.enabled:
            self.credentials.ensure()  # the instance's CA and signing key, made on first start

    # --- the one path ------------------------------------------------------------------------
    def submit(self, req: GenerateRequest, owner: str | None = None, policy: TextPolicy | None = None) -> Job:
        """Accept a request: plan it, write its `pending` record and queue it (or raise QueueFull).

        `owner`: the id of the API key asking (see auth.py), recorded with the record. A persona fills in what
        the request leaves unset; `policy` (a post's character limit) and the persona's forbidden phrases become
        the text's policy."""
        use = None
        if req.persona:
            engine_of = lambda model: (self.catalog.engine_of(model) or (None,))[0] if model else None  # noqa: E731
            req, use, forbidden = apply(self.personas.resolve(req.persona), req, engine_of)
            if forbidden:
                policy = replace(policy or TextPolicy(), forbidden_phrases=forbidden.forbidden_phrases)
        plan = spec_of(req.content_type).plan(req, self.settings, self.catalog)
        check_limits(req, plan.params, self.settings)
        if policy is not None and req.content_type == "text":
            plan = replace(plan, policy=policy)
        self._inputs(plan)  # a video's inputs must exist before its record does
        accepted = Accepted(str(uuid.uuid4()), req, plan, time.perf_counter())

        def accept() -> None:
            controls = {
                "messages": plan.messages,
                "raw": plan.raw or None,
                "fallback_reason": plan.fallback_reason,
                "persona": use.model_dump(mode="json") if use else None,
                # what a worker needs to run the same plan (jobs_celery.accepted_of); no part of the record
                "policy": asdict(plan.policy) if plan.policy else None,
                "inputs": plan.inputs,
            }
            row = dict(
                id=accepted.content_id,
                content_type=req.content_type,
                status="pending",
                prompt=req.prompt,
                system=req.system,
                quality=req.quality,
                params=plan.params.model_dump(mode="json"),
                model_name=plan.model,
                extra={k: v for k, v in controls.items() if v is not None},
                created_at=_now(),
                owner=owner,
                persona_name=use.name if use else None,
                persona_version=use.version if use else None,
            )
            with self.db.transaction() as conn:  # a bare insert: an ORM session costs ~0.5 ms more per request
                conn.execute(insert(ContentRow), [row])
            log.info("content=%s accepted type=%s model=%s", accepted.content_id, req.content_type, plan.model)

        def run(job: Job) -> ContentRecord:
            return self._execute(accepted, job)

        return self.runner.submit(accepted.content_id, run, on_accept=accept, content_type=req.content_type)

    def generate(
        self,
        req: GenerateRequest,
        emit: Emit | None = None,
        cancel: threading.Event | None = None,
        owner: str | None = None,
        policy: TextPolicy | None = None,
    ) -> ContentRecord:
        """Submit and wait for the final record; engine events go to `emit` as they happen."""
        return self.wait(self.submit(req, owner, policy), emit, cancel)

    def wait(self, job: Job, emit: Emit | None = None, cancel: threading.Event | None = None) -> ContentRecord:
        """Wait for a submitted job's final record (raising its error); its events go to `emit`."""
        if emit is not None:
            job.listen(lambda event: event["type"] != "final" and emit(event))
        while not job.done.wait(0.1):
            if cancel is not None and cancel.is_set() and not job.cancel.is_set():
                self.cancel(job.content_id)
        if job.error is not None:
            raise job.error
        return job.result

    def cancel(self, content_id: str, wait: bool = True) -> ContentRecord | None:
        """Stop queued or running work; the record ends `cancelled`, without an artifact."""
        job = self.runner.cancel(content_id)
        if job is None:
            rec = self.get(content_id)
            raise Conflict(f"content {content_id} is already {rec.status}", content_id=content_id)
        if job.state == "queued":  # never started: removed from the queue
            err = Cancelled("cancelled while waiting in the queue", content_id=content_id)
            self._fail(content_id, err, time.perf_counter())
            job.finish(None, err)
        if not wait:
            return None
        job.done.wait(timeout=30)  # a running job stops between tokens
        return self.get(content_id)

    def _execute(self, accepted: Accepted, job: Job) -> ContentRecord:
        try:
            return self._run(accepted, job.publish, job.cancel)
        except GenforgeError as exc:
            if isinstance(exc, Cancelled) and self.runner.closed:  # stopped by the shutdown, not by a client
                exc = Interrupted("the server stopped while this generation was running")
            exc.content_id = accepted.content_id
            self._fail(accepted.content_id, exc, accepted.started)
            raise exc from None
        except Exception as exc:
            log.exception("content=%s unexpected failure", accepted.content_id)
            err = GenforgeError(f"internal error: {type(exc).__name__}: {exc}", content_id=accepted.content_id)
            self._fail(accepted.content_id, err, accepted.started)
            raise err from exc

    def _run(self, accepted: Accepted, emit: Emit, cancel: threading.Event) -> ContentRecord:
        req, plan, content_id = accepted.request, accepted.plan, accepted.content_id
        model = self.catalog.resolve(plan.model, req.content_type)
        inputs = self._inputs(plan)

        def running() -> None:  # called once the engine has the job: the commit overlaps its first step
            values = {"status": "running", "started_at": _now(), "model_engine": model.engine}
            values["model_sha256"] = model.sha256 or None  # none for remote models
            this = ContentRow.id == content_id
            with self.db.transaction() as conn:
                if model.engine == "remote":
                    extra = conn.execute(select(ContentRow.extra).where(this)).scalar_one()
                    base_url = redact_url(model.path)  # the record never holds the URL's password
                    remote = {"remote": True, "base_url": base_url, "served_model": model.served_model}
                    values["extra"] = {**(extra or {}), "model": remote}
                conn.execute(update(ContentRow).where(this).values(**values))

        job = GenerationJob(
            content_id,
            req.content_type,
            model,
            req.prompt,
            req.system,
            plan.params,
            messages=plan.messages,
            raw=plan.raw,
            fallback_reason=plan.fallback_reason,
            policy=plan.policy,
            inputs=inputs,
        )
        # `job`: after a policy retry, the one whose seed passed
        out, job = self._generate_checked(job, emit, cancel, running)
        signed = self.credentials.sign(  # Content Credentials; the signed file is what is stored and hashed
            content_id=content_id,
            content_type=req.content_type,
            media_type=out.media_type,
            data=out.data,
            model=model,
            params=job.params.model_dump(mode="json"),
        )
        extra = {**signed.extra, **({"model_source": model.source} if model.source else {})}
        with self.store.guard():  # a delete of a record sharing this file waits until ours is committed
            stored = self.store.write(signed.data, out.media_type)
            try:
                result = self._retry(
                    lambda: self._succeed(accepted, out, stored, job.params, extra), SUCCESS_COMMIT_RETRY_S
                )
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
            result.timings.total_ms,
        )
        return result

    def _generate_checked(
        self, job: GenerationJob, emit: Emit, cancel: threading.Event, started: Callable[[], None] | None
    ):
        """Run the engine and the validator. Output that breaks the job's policy (a forbidden phrase, a character
        limit) is retried with the next seed, up to GENFORGE_POLICY_ATTEMPTS runs; each broken run is listed in
        the record's `attempts`, and the record keeps the seed that passed. Returns (output, the job that made it).
        `started` runs once, as soon as the engine has the first run (the engines call it; see worker.py)."""
        spec = spec_of(job.content_type)
        attempts: list[dict] = []
        while True:
            out = self.engines.generate(job, emit=emit, cancel=cancel, started=started)
            started = None
            if not isinstance(out.facts, spec.facts):
                raise InvalidOutput(f"the engine reported {type(out.facts).__name__}, not {spec.facts.__name__}")
            try:
                spec.validate(out, job)
                return out, job
            except PolicyViolation as exc:
                attempts.append({"seed": getattr(job.params, "seed", None), "code": exc.code, "message": exc.message})
                self._retry(lambda: self._note_attempts(job.content_id, list(attempts)), SUCCESS_COMMIT_RETRY_S)  # noqa: B023
                log.info("content=%s attempt %d broke the policy", job.content_id, len(attempts))
                log.debug("content=%s attempt %d: %s", job.content_id, len(attempts), exc.message)  # may quote text
                if len(attempts) >= self.settings.policy_attempts or getattr(job.params, "seed", None) is None:
                    exc.message = f"{exc.message} (in each of {len(attempts)} attempt(s); the last is shown)"
                    raise
                emit({"type": "retry", "attempt": len(attempts) + 1, "reason": exc.message})
                job = replace(job, params=job.params.model_copy(update={"seed": (job.params.seed + 1) % SEED_LIMIT}))

    def _note_attempts(self, content_id: str, attempts: list[dict]) -> None:
        with self.db.session() as s:
            row = s.get(ContentRow, content_id)
            row.extra = {**(row.extra or {}), "attempts": list(attempts)}

    def _inputs(self, plan: Plan) -> VideoInputs | None:
        """The stored files a plan names (a video's image and narration): succeeded records of the right types."""
        if not plan.inputs:
            return None
        paths = {}
        with self.db.session() as s:
            for role, (content_id, content_type) in plan.inputs.items():
                row = s.get(ContentRow, content_id)
                if row is None or row.content_type != content_type or row.status != "succeeded":
                    state = "no record" if row is None else f"a {row.status} {row.content_type} record"
                    raise InvalidRequest(
                        f"params.{role}: {content_id!r} is {state}, not a succeeded {content_type} record",
                        field=f"params.{role}",
                    )
                path = self.store.resolve(row.artifact_path)
                if not path.is_file():
                    raise ArtifactLost(f"the file of {role} {content_id} is missing", content_id=content_id)
                paths[role] = str(path)
        return VideoInputs(image_path=paths["image"], narration_path=paths["narration"])

    def _succeed(self, accepted: Accepted, out, stored, params: BaseModel, extra: dict) -> ContentRecord:
        """The final commit: the record turns `succeeded` with everything the engine and the store said (and the
        parameters that ran: after a policy retry, the seed that passed)."""
        with self.db.session() as s:
            row = s.get(ContentRow, accepted.content_id)
            row.status, row.finished_at = "succeeded", _now()
            row.params = params.model_dump(mode="json")
            row.error_code = row.error_message = row.error_hint = None
            row.engine_version = out.engine_version
            row.model_engine = out.engine or row.model_engine
            row.text, row.finish_reason = out.text, out.finish_reason
            if out.usage:
                row.prompt_tokens = out.usage.get("prompt_tokens")
                row.completion_tokens = out.usage.get("completion_tokens")
            row.extra = {**(row.extra or {}), **out.facts.model_dump(mode="json"), **extra}
            if out.provenance:
                row.extra["model"] = {**row.extra.get("model", {}), **out.provenance}
            row.artifact_sha256, row.artifact_size = stored.sha256, stored.size_bytes
            row.artifact_media_type, row.artifact_path = stored.media_type, stored.relpath
            row.load_ms, row.generate_ms = round(out.load_ms, 2), round(out.generate_ms, 2)
            row.total_ms = round((time.perf_counter() - accepted.started) * 1000, 2)
            return to_record(row)

    def _retry(self, commit, within_s: float | None):
        """Run a database commit again while the database is unavailable (locked, full): for `within_s`
        seconds, or until it works when None (unless the service is closing, when it gives up)."""
        deadline = None if within_s is None else time.monotonic() + within_s
        delay = 0.1
        while True:
            try:
                return commit()
            except DatabaseUnavailable as exc:
                if self.closing or (deadline is not None and time.monotonic() > deadline):
                    raise
                log.warning("database unavailable (%s); retrying in %.1f s", exc.message, delay)
                time.sleep(delay)
                delay = min(delay * 2, 2.0)

    def _fail(self, content_id: str, err: GenforgeError, started: float) -> None:
        """Record the failure. While the database is unavailable this waits and tries again, so that no record
        stays `pending` or `running` with no job behind it; the job is not finished until it is recorded."""
        # The message may quote the request or the output (a forbidden phrase, a remote's answer): user data, in
        # the record and at DEBUG, not in the default log.
        log.warning("content=%s failed code=%s", content_id, err.code)
        log.debug("content=%s failed: %s", content_id, err.message)
        status: Status = "cancelled" if err.code == "cancelled" else "failed"

        def commit() -> None:
            with self.db.session() as s:
                row = s.get(ContentRow, content_id)
                row.status = status
                row.error_code, row.error_message, row.error_hint = err.code, err.message, err.hint
                row.finished_at = _now()
                row.total_ms = round((time.perf_counter() - started) * 1000, 2)
                content_type = row.content_type
            metrics.observe_failure(content_type, err.code)

        try:
            self._retry(commit, None)
        except DatabaseUnavailable:
            # Only when shutting down: the record stays unfinished (never `succeeded`), and the next start's
            # recovery marks it `interrupted`. The original error still reaches the caller.
            log.exception("content=%s could not record the failure", content_id)

    # --- reading and deleting ------------------------------------------------------------------
    def get(self, content_id: str) -> ContentRecord:
        with self.db.session() as s:
            row = s.get(ContentRow, content_id)
            if row is None:
                raise NotFound(f"no content with id {content_id!r}", field="id")
            position = self.runner.position(content_id) if row.status == "pending" else None
            return to_record(row, position)

    def list(
        self,
        content_type: str | None = None,
        status: str | None = None,
        limit: int = 50,
        offset: int = 0,
        owner: str | None = None,
        *,
        q: str | None = None,
        model: str | None = None,
        created_after: datetime | None = None,
        created_before: datetime | None = None,
    ) -> ContentPage:
        """Records newest first; `q` is a full-text search over prompt and text (genforge.search); with
        `owner`, only the records that key made."""
        conds = []
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
        with self.db.session() as s:
            found = self.search.page(s, q, conds, limit, offset) if q else None
            if found is None:
                total = s.scalar(select(func.count()).select_from(ContentRow).where(*conds))
                newest = select(ContentRow).where(*conds).order_by(ContentRow.created_at.desc())
                found = total, s.scalars(newest.offset(offset).limit(limit)).all()
            total, rows = found
            return ContentPage(items=[to_record(r) for r in rows], total=total, limit=limit, offset=offset)

    def artifact(self, content_id: str) -> tuple[Path, str]:
        with self.db.session() as s:
            row = s.get(ContentRow, content_id)
            if row is None:
                raise NotFound(f"no content with id {content_id!r}", field="id")
            if not row.artifact_path:
                raise NotFound(f"content {content_id} has no file (status {row.status})", field="id")
            path = self.store.resolve(row.artifact_path)
            if not path.is_file():
                raise ArtifactLost(
                    f"the file of content {content_id} is missing from the data directory", content_id=content_id
                )
            size = path.stat().st_size
            if size != row.artifact_size:  # cheap on every read; `genforge audit` re-hashes
                raise ArtifactChanged(
                    f"the file of content {content_id} is {size} bytes, not the recorded {row.artifact_size}: it "
                    "was changed outside genforge",
                    content_id=content_id,
                )
            return path, row.artifact_media_type

    def verify(self, content_id: str) -> ArtifactCheck:
        """Re-hash a record's file: intact when it exists with the recorded sha256 and size."""
        with self.db.session() as s:
            row = s.get(ContentRow, content_id)
            if row is None:
                raise NotFound(f"no content with id {content_id!r}", field="id")
            if not row.artifact_path:
                raise Conflict(
                    f"content {content_id} has no artifact to verify (status {row.status})",
                    content_id=content_id,
                    hint="Only succeeded records have a file.",
                )
            relpath, expected_sha, expected_size = row.artifact_path, row.artifact_sha256, row.artifact_size
        path = self.store.resolve(relpath)
        check = ArtifactCheck(
            id=content_id,
            expected_sha256=expected_sha,
            expected_size_bytes=expected_size,
            intact=False,
            detail="the file is missing",
        )
        if path.is_file():
            check.sha256, check.size_bytes = sha256_file(path), path.stat().st_size
            check.intact = check.sha256 == expected_sha and check.size_bytes == expected_size
            check.detail = (
                "the file's sha256 and size are the recorded ones"
                if check.intact
                else ("the file differs from the record")
            )
        return check

    def delete(self, content_id: str) -> None:
        # The file goes under the same guard, after the commit: removed once the guard is released, it could be
        # the file a generation had just written (under the guard) and recorded as its own meanwhile.
        with self.store.guard():
            with self.db.session() as s:
                row = s.get(ContentRow, content_id)
                if row is None:
                    raise NotFound(f"no content with id {content_id!r}", field="id")
                relpath = row.artifact_path
                s.delete(row)
                shared = relpath and (
                    s.query(ContentRow).filter(ContentRow.artifact_path == relpath, ContentRow.id != content_id).count()
                )
            if relpath and not shared:
                self.store.remove(relpath)
        log.info("content=%s deleted", content_id)

    def shutdown(self, drain_s: float) -> None:
        """A clean stop: no new work; queued jobs end `interrupted` unrun; running ones get `drain_s` seconds
        to finish, then are stopped (between tokens or steps) and end `interrupted` too."""
        queued, left = self.runner.drain(drain_s)
        for job in queued:
            err = Interrupted("the server stopped before this generation started", content_id=job.content_id)
            self._fail(job.content_id, err, time.perf_counter())
            job.finish(None, err)
        for job in left:
            if not job.done.wait(CANCEL_WAIT_S):
                log.warning("content=%s did not stop within %.0f s of the shutdown", job.content_id, CANCEL_WAIT_S)
        self.closing = True
        if queued or left:
            log.info("shutdown: %d queued job(s) interrupted, %d running job(s) stopped", len(queued), len(left))

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
        orphans = [p for p in self.store.files() if str(p.relative_to(self.store.root)) not in referenced]
        for path in orphans:
            path.unlink(missing_ok=True)
        if stale or orphans:
            log.warning(
                "recovered: %d interrupted record(s) marked failed, %d orphan file(s) removed", len(stale), len(orphans)
            )
        return {"interrupted": [r.id for r in stale], "orphans_removed": len(orphans)}

    def credentials_of(self, content_id: str) -> dict:
        """The record's Content Credentials, as read back from its file now (or its text's signed sidecar)."""
        path, media_type = self.artifact(content_id)
        with self.db.session() as s:
            extra = dict(s.get(ContentRow, content_id).extra or {})
        return describe(self.credentials, content_id, extra, path.read_bytes(), media_type)

    def find_by_content_hash(self, digest: str) -> list[ContentRecord]:
        """Succeeded records whose decoded pixels or samples hash to `digest` (a file stripped of metadata)."""
        with self.db.session() as s:
            rows = s.query(ContentRow).filter(
                ContentRow.status == "succeeded", ContentRow.extra["content_hash"].as_string() == digest
            )
            return [to_record(r) for r in rows]

    def sidecar_of(self, content_id: str) -> dict | None:
        with self.db.session() as s:
            row = s.get(ContentRow, content_id)
            return (row.extra or {}).get("credentials_sidecar") if row else None

    def find_by_file(self, path: Path) -> tuple[str, list[ContentRecord]]:
        """(sha256 of the file, the succeeded records whose artifact it is)."""
        digest = sha256_file(path)
        with self.db.session() as s:
            rows = (
                s.query(ContentRow).filter(ContentRow.artifact_sha256 == digest, ContentRow.status == "succeeded").all()
            )
            return digest, [to_record(r) for r in rows]
