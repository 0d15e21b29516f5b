"""The distributed JobQueue: Celery on Redis (GENFORGE_QUEUE=celery, GENFORGE_BROKER_URL=redis://...).

The API process accepts, records and enqueues (one Celery task per record, on the queue of its content type)
and loads no model; `genforge worker` processes take the tasks and run them through the same
ContentService.execute path as the embedded runner, with the engines in their supervised engine workers, and
write the artifacts to the shared GENFORGE_ARTIFACT_DIR. The database (PostgreSQL) is the truth about every
job; Redis carries the tasks, the engine events (pub/sub, worker -> API) and the cancels and leases.

Delivery is honest:
- A worker runs a record only if it moves it from `pending` to `running` itself (a compare-and-set in the
  record store, core/records.py, which counts the run): a task whose record was cancelled (or already run) is
  acknowledged and dropped, and a run's final commit counts only while the record is still that run's.
- Tasks are acknowledged late (after the run; `reject_on_worker_lost` is set too, though it acts only in prefork
  pools, and workers run a threads pool); the visibility timeout is longer than any job may run, so Redis never
  hands a live job to a second worker. A lost worker's unacknowledged task comes back only after it, which is
  why the leases below, not Redis, decide when a job lost its worker.
- A worker holds a lease (a Redis key it renews) on each job it runs. Every worker reaps: a `running` record
  whose lease lapsed lost its worker (killed, machine gone); it goes back to `pending` and is enqueued once
  more, or, on its second loss, ends `failed` with `interrupted`. Never `succeeded` without a file: the
  record turns `succeeded` only in the final commit after the artifact is durable, as in the embedded mode.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import os
import socket
import threading
import time
from datetime import UTC, datetime
from typing import Any

from pydantic import TypeAdapter

from genforge import errors
from genforge.config import Settings
from genforge.contenttypes import ContentRecord, Plan, spec_of
from genforge.contenttypes.request import GenerateRequest
from genforge.core.jobs import Job
from genforge.core.records import SqlContentRecords
from genforge.core.service import Accepted, ContentService
from genforge.engines.base import IdentityPolicy, TextPolicy
from genforge.engines.pool import WireError
from genforge.errors import Cancelled, GenforgeError, Interrupted, QueueFull, ShuttingDown, error_class
from genforge.redact import redact_text, redact_url
from genforge.stores.db import ContentRow

log = logging.getLogger("genforge.distributed.celery_queue")

TASK = "genforge.run"
MAX_ATTEMPTS = 2  # a job whose worker was lost runs once more, then ends `interrupted`
KEY_TTL_S = 3600  # cancel flags expire; nothing else is kept in Redis
# How long readiness reuses its answer about the broker and the workers: a /readyz probe costs at most one broker
# ping and one remote-control broadcast (up to WORKERS_TIMEOUT_S) in this time, however often it is asked.
CHECK_TTL_S = 1.5
WORKERS_TIMEOUT_S = 2.0


def queue_of(content_type: str) -> str:
    return f"genforge.{content_type}"


def events_channel(content_id: str) -> str:
    return f"genforge:events:{content_id}"


def cancel_key(content_id: str) -> str:
    return f"genforge:cancel:{content_id}"


def lease_key(content_id: str) -> str:
    return f"genforge:lease:{content_id}"


def _now() -> datetime:
    return datetime.now(UTC)


def check_settings(settings: Settings) -> None:
    """The celery mode needs a broker, and a database and an artifact directory that every process shares."""
    if not settings.broker_url:
        raise errors.InvalidRequest(
            "GENFORGE_QUEUE=celery needs GENFORGE_BROKER_URL (e.g. redis://127.0.0.1:6379/0)", field="broker_url"
        )
    # Each process's own SQLite file or artifact directory would lose the jobs between API and workers.
    for value, name, example in (
        (settings.database_url, "GENFORGE_DATABASE_URL", "postgresql+psycopg://user@host/genforge"),
        (settings.artifact_dir, "GENFORGE_ARTIFACT_DIR", "a directory every API and worker process mounts"),
    ):
        if not value:
            raise errors.InvalidRequest(
                f"GENFORGE_QUEUE=celery needs {name}, shared by every process ({example})",
                hint="See docs/deploy.md: the API and worker processes share the database and the artifacts.",
            )


def celery_app(settings: Settings):
    """The Celery application of the API and the workers (same broker, same settings)."""
    from celery import Celery

    check_settings(settings)
    app = Celery("genforge", broker=settings.broker_url, set_as_current=False)
    app.conf.update(
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        worker_prefetch_multiplier=1,
        task_ignore_result=True,
        task_serializer="json",
        accept_content=["json"],
        task_default_queue=queue_of("text"),
        # Longer than any job may run: Redis must not redeliver a job a live worker is still running.
        broker_transport_options={"visibility_timeout": settings.generation_timeout_s + 600},
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        worker_cancel_long_running_tasks_on_connection_loss=False,
    )
    return app


def redis_client(settings: Settings):
    import redis

    return redis.Redis.from_url(settings.broker_url, socket_timeout=10, socket_connect_timeout=5)


def _broker_down(exc: Exception) -> GenforgeError:
    return errors.BrokerUnavailable(
        f"the broker cannot be reached: {redact_text(str(exc))}", details={"retry_after": 2}
    )


def error_of(record: ContentRecord) -> GenforgeError:
    """The typed error of a record another process finished (any code, through the one code -> class table)."""
    err = record.error
    klass = error_class(err.code if err else "")
    message = (err.message if err else None) or f"content {record.id} ended {record.status}"
    return klass(message, hint=err.hint if err else None, content_id=record.id)


class FollowedJob(Job):
    """A job another process runs, followed here: when this process began following it, and whether the watch
    loop already saw its record finished (it then finishes the job from the record if no final event came)."""

    def __init__(self, content_id: str):
        super().__init__(content_id)
        self.tracked_since = time.monotonic()
        self.final_seen = False


# --- the API side -----------------------------------------------------------------------------------------
class CeleryJobRunner:
    """The core's JobQueue over Celery: submit, get, position, cancel, depth, running, drain, close."""

    def __init__(self, settings: Settings, records: SqlContentRecords):
        self.settings = settings
        self.records = records  # the truth about every job; its final record is read from here
        self.queue_size = settings.queue_size
        self.app = celery_app(settings)
        self.redis = redis_client(settings)
        self._jobs: dict[str, FollowedJob] = {}
        self._lock = threading.Lock()
        self._closed = False
        self._checked: tuple[float, tuple[bool, str]] | None = None  # (when, check()'s answer)
        self._checking = threading.Lock()
        self._pubsub = self._subscribe()  # before the first submit, so no event of ours is missed
        threading.Thread(target=self._relay, name="genforge-celery-events", daemon=True).start()
        threading.Thread(target=self._watch, name="genforge-celery-watch", daemon=True).start()

    # --- submit and follow
    def submit(self, content_id: str, run, on_accept=None, content_type: str | None = None) -> Job:
        """Write the record (`on_accept`) and enqueue its task; `run` is the embedded runner's and unused."""
        if self._closed:
            raise ShuttingDown("the server is shutting down and accepts no new work", details={"retry_after": 5})
        waiting = self.depth
        if waiting >= self.queue_size:
            raise QueueFull(f"the queue is full ({waiting} waiting)", details={"retry_after": 1 + waiting // 4})
        job = self._track(content_id)
        try:
            if on_accept is not None:
                on_accept()
            self.app.send_task(TASK, args=[content_id], queue=queue_of(content_type or "text"))
        except GenforgeError:
            self._untrack(content_id)
            raise
        except Exception as exc:  # the broker is down: the record must not stay pending with no task behind it
            self._untrack(content_id)
            err = _broker_down(exc)
            self._fail_pending(content_id, err)
            err.content_id = content_id
            raise err from exc
        return job

    def _track(self, content_id: str) -> FollowedJob:
        with self._lock:
            job = self._jobs.get(content_id)
            if job is None:
                job = self._jobs[content_id] = FollowedJob(content_id)
            return job

    def _untrack(self, content_id: str) -> None:
        with self._lock:
            self._jobs.pop(content_id, None)

    def _fail_pending(self, content_id: str, err: GenforgeError) -> None:
        self.records.finish(content_id, "failed", err)

    def _subscribe(self):
        try:
            pubsub = self.redis.pubsub(ignore_subscribe_messages=True)
            pubsub.psubscribe(events_channel("*"))
            return pubsub
        except Exception as exc:  # the broker is down: readiness says so, the relay keeps trying
            log.warning("cannot subscribe to the workers' events: %s", redact_text(str(exc)))
            return None

    def _relay(self) -> None:
        """Engine events from the workers (Redis pub/sub) to the jobs this process follows."""
        while not self._closed:
            try:
                pubsub = self._pubsub or self._subscribe()
                if pubsub is None:
                    time.sleep(1)
                    continue
                self._pubsub = pubsub
                for message in pubsub.listen():
                    if self._closed:
                        return
                    if message["type"] != "pmessage":
                        continue
                    content_id = message["channel"].decode().rsplit(":", 1)[1]
                    with self._lock:
                        job = self._jobs.get(content_id)
                    if job is None:
                        continue
                    event = json.loads(message["data"])
                    if event["type"] == "final":
                        self._finish(job, event.get("error"))
                    else:
                        job.publish(event)
            except Exception as exc:  # Redis went away: the watch loop finishes jobs from the database meanwhile
                if self._closed:
                    return
                log.warning("event relay lost the broker (%s); reconnecting", redact_text(str(exc)))
                self._pubsub = None
                time.sleep(1)

    def _finish(self, job: Job, wire: dict | None) -> None:
        with self._lock:
            if self._jobs.get(job.content_id) is not job:
                return
            del self._jobs[job.content_id]
        if wire is not None:
            err = WireError(wire["name"], wire["message"], wire.get("hint"), wire.get("field")).error()
            err.content_id = job.content_id
            job.finish(None, err)
            return
        try:
            job.finish(self.records.get(job.content_id), None)
        except GenforgeError as exc:
            job.finish(None, exc)

    def _watch(self) -> None:
        """A job whose final event was missed (Redis restarted, a reaper ended it) is finished from its record."""
        while not self._closed:
            time.sleep(1.0)
            with self._lock:
                jobs = [j for j in self._jobs.values() if time.monotonic() - j.tracked_since > 2.0]
            if not jobs:
                continue
            try:
                status = self.records.statuses([j.content_id for j in jobs])
            except GenforgeError:
                continue
            for job in jobs:
                state = status.get(job.content_id)
                if state in ("succeeded", "failed", "cancelled") or state is None:
                    if job.final_seen:  # finished two rounds ago and no event came
                        self._finish_from_record(job)
                    job.final_seen = True

    def _finish_from_record(self, job: Job) -> None:
        try:
            record = self.records.get(job.content_id)
        except GenforgeError as exc:
            self._finish_with(job, None, exc)
            return
        self._finish_with(job, record if record.status == "succeeded" else None, error_of(record))

    def _finish_with(self, job: Job, record: ContentRecord | None, err: GenforgeError | None) -> None:
        with self._lock:
            if self._jobs.pop(job.content_id, None) is None:
                return
        job.finish(record, None if record is not None else err)

    def get(self, content_id: str) -> Job | None:
        """The job, followed from now on when another API process accepted it (its earlier events are gone)."""
        with self._lock:
            job = self._jobs.get(content_id)
        if job is not None:
            return job
        found = self.records.status_of(content_id)
        unfinished = found is not None and found[0] in ("pending", "running")
        return self._track(content_id) if unfinished else None

    # --- where a job is
    def position(self, content_id: str) -> int | None:
        """1-based place among the pending records of its content type (every API process agrees)."""
        found = self.records.created_at(content_id)
        if found is None:
            return None
        content_type, created_at = found
        return self.records.count("pending", content_type, before=created_at) + 1

    @property
    def depth(self) -> int:
        return self.records.count("pending")

    @property
    def running(self) -> int:
        return self.records.count("running")

    def cancel(self, content_id: str) -> Job | None:
        """A pending record is cancelled here (its task will not run); a running one is told to stop (its worker
        reads the flag between tokens or steps). None when the record is already finished."""
        took = self.records.cancel_pending(content_id, Cancelled("cancelled while waiting in the queue"))
        found = None if took else self.records.status_of(content_id)
        status = found[0] if found else None
        if not took and status != "running":
            return None
        job = self._track(content_id)
        job.cancel.set()
        if took:
            job.state = "queued"  # the service records it `cancelled` and finishes the job
            self._untrack(content_id)
            return job
        job.state = "running"
        try:
            self.redis.set(cancel_key(content_id), 1, ex=KEY_TTL_S)
        except Exception as exc:
            raise _broker_down(exc) from exc
        return job

    # --- readiness and shutdown
    def check(self) -> tuple[bool, str]:
        """Whether the broker answers, and which workers serve which queues: asked at most once per CHECK_TTL_S
        (callers meanwhile share the last answer, or wait for the one being asked)."""
        with self._checking:
            if self._checked is not None and time.monotonic() - self._checked[0] < CHECK_TTL_S:
                return self._checked[1]
            answer = self._check()
            self._checked = (time.monotonic(), answer)
            return answer

    def _check(self) -> tuple[bool, str]:
        try:
            self.redis.ping()
        except Exception as exc:  # the broker's URL and the error, without its password
            return False, f"broker {redact_url(self.settings.broker_url)} unreachable: {redact_text(str(exc))}"
        workers = workers_serving(self.app, timeout=WORKERS_TIMEOUT_S)
        if not workers:
            return False, "the broker answers, but no `genforge worker` does"
        return True, "; ".join(f"{name}: {', '.join(types)}" for name, types in sorted(workers.items()))

    @property
    def closed(self) -> bool:
        return self._closed

    def drain(self, timeout: float) -> tuple[list[Job], list[Job]]:
        """Stop accepting; the jobs themselves live on in the workers (nothing here to interrupt)."""
        self._closed = True
        return [], []

    def close(self) -> None:
        self._closed = True
        if self._pubsub is not None:
            try:
                self._pubsub.close()
            except Exception as exc:  # closing a dead connection
                log.debug("closing the event relay: %s", exc)
        self.redis.close()


def workers_serving(app, timeout: float = 2.0) -> dict[str, list[str]]:
    """{worker name: content types} of the workers that answer now (Celery's remote control)."""
    replies = app.control.inspect(timeout=timeout).active_queues() or {}
    return {
        name: sorted(q["name"].removeprefix("genforge.") for q in queues if q["name"].startswith("genforge."))
        for name, queues in replies.items()
    }


# --- the worker side --------------------------------------------------------------------------------------
def accepted_of(row: ContentRow, run: int, started: float) -> Accepted:
    """A record's request and plan, rebuilt from what it recorded (exactly what a client can send again, and the
    controls the API process planned and authorized: messages, raw, a video's inputs, a text's policy)."""
    spec = spec_of(row.content_type)
    extra = row.extra or {}
    req = GenerateRequest(
        content_type=row.content_type,
        prompt=row.prompt,
        system=row.system,
        quality=row.quality,
        model=row.model_name,
        params=row.params,
    )
    inputs = extra.get("inputs")
    plan = Plan(
        row.model_name,
        TypeAdapter(spec.settings).validate_python(row.params),
        messages=extra.get("messages"),
        raw=bool(extra.get("raw", False)),
        fallback_reason=extra.get("fallback_reason"),
        inputs={role: (ref[0], ref[1]) for role, ref in inputs.items()} if inputs else None,
        policy=_policy(extra.get("policy")),
        identity=_identity(extra.get("identity_policy")),
    )
    return Accepted(row.id, req, plan, started, run)


def _identity(recorded: dict[str, Any] | None) -> IdentityPolicy | None:
    """A persona's face policy as the API process planned it."""
    if not recorded:
        return None
    return IdentityPolicy(**{**recorded, "references": tuple(recorded.get("references", ()))})


def _policy(recorded: dict[str, Any] | None) -> TextPolicy | None:
    """The text's policy (a persona's forbidden phrases, a post's limits) as the API process planned it."""
    if not recorded:
        return None
    return TextPolicy(**{**recorded, "forbidden_phrases": tuple(recorded.get("forbidden_phrases", ()))})


class WorkerSide:
    """What a `genforge worker` process does with a task: take the record, run it, publish its events."""

    def __init__(self, settings: Settings, service: ContentService, records: SqlContentRecords, app: Any):
        self.settings = settings
        self.service = service
        self.records = records
        self.app = app
        self.redis = redis_client(settings)
        self.node = f"{socket.gethostname()}-{os.getpid()}"
        self.stopping = threading.Event()

    def run(self, content_id: str) -> None:
        lease = lease_key(content_id)
        # The lease comes before the record says running; a lease held already is a live worker's (a duplicate).
        if not self.redis.set(lease, self.node, ex=int(self.settings.worker_lease_s), nx=True):
            log.info("content=%s is leased by another worker: duplicate task dropped", content_id)
            return
        try:
            taken = self.records.take(content_id)
            if taken is None:
                log.info("content=%s is not pending (cancelled, or run already): task dropped", content_id)
                return
            row, run = taken
            waited = (_now() - row.created_at).total_seconds()
            accepted = accepted_of(row, run, time.perf_counter() - waited)
            job = Job(content_id)
            job.listen(lambda event: self.redis.publish(events_channel(content_id), json.dumps(event)))
            stop = threading.Event()
            watcher = threading.Thread(target=self._keep, args=(content_id, job, stop), daemon=True)
            watcher.start()
            wire = None
            try:
                self.service.execute(accepted, job)  # the one path; it records success or failure
            except GenforgeError as exc:
                wire = dataclasses.asdict(WireError.of(exc))
            finally:
                stop.set()
                watcher.join()
            self.redis.publish(events_channel(content_id), json.dumps({"type": "final", "error": wire}))
        finally:
            self.redis.delete(lease)

    def _keep(self, content_id: str, job: Job, stop: threading.Event) -> None:
        """While the job runs: renew its lease, and pass a cancel from any API process to it."""
        renew_every = self.settings.worker_lease_s / 3
        renewed = time.monotonic()
        while not stop.wait(0.2):
            try:
                if self.redis.exists(cancel_key(content_id)):
                    job.cancel.set()
                if time.monotonic() - renewed > renew_every:
                    self.redis.set(lease_key(content_id), self.node, ex=int(self.settings.worker_lease_s))
                    renewed = time.monotonic()
            except Exception as exc:  # Redis away for a moment: the lease has time to spare
                log.warning("content=%s: broker unreachable while running (%s)", content_id, redact_text(str(exc)))

    def reap_forever(self, every_s: float = 2.0) -> None:
        while not self.stopping.wait(every_s):
            try:
                self.reap()
            except Exception:
                log.exception("reaping lost jobs failed; trying again")

    def reap(self) -> None:
        """Running records whose lease lapsed lost their worker: once more on another worker, or `interrupted`.
        Each move names the run it ends, so a worker that was only slow cannot have its record taken twice."""
        for lease in self.records.running_leases():
            if self.redis.exists(lease_key(lease.content_id)):
                continue
            if lease.run < MAX_ATTEMPTS:
                if self.records.requeue(lease.content_id, lease.run):
                    log.warning("content=%s lost its worker; running it once more", lease.content_id)
                    self.app.send_task(TASK, args=[lease.content_id], queue=queue_of(lease.content_type))
            else:
                err = Interrupted(
                    f"the worker running this generation was lost {lease.run} times (killed, or its machine went away)"
                )
                if self.records.finish(lease.content_id, "failed", err, lease.run):
                    log.warning("content=%s lost its worker again; recorded interrupted", lease.content_id)
                    wire = dataclasses.asdict(WireError.of(err))
                    self.redis.publish(events_channel(lease.content_id), json.dumps({"type": "final", "error": wire}))
