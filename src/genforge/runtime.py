"""Runtime: builds the parts once (database, catalog, store, engine worker, service) for the API and CLI."""

from __future__ import annotations

import fcntl
import logging
import os
import socket
import threading
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from genforge.config import Settings
from genforge.core import metrics
from genforge.core.catalog import ModelCatalog
from genforge.core.jobs import JobQueue, JobRunner
from genforge.core.metrics import serve_worker_metrics
from genforge.core.records import SqlContentRecords
from genforge.core.service import ContentService
from genforge.distributed.celery_queue import TASK, CeleryJobRunner, WorkerSide, celery_app, queue_of
from genforge.engines.pool import EnginePool
from genforge.errors import AlreadyRunning, Conflict, DatabaseUnavailable, GenforgeError
from genforge.media.private import private_dir
from genforge.platform.channels import ChannelStore
from genforge.platform.personas import PersonaStore
from genforge.platform.posts import PostService
from genforge.platform.publishing import PublicationService, PublisherLoop
from genforge.platform.webhooks import WebhookService
from genforge.redact import redact_text
from genforge.stores.artifacts import ArtifactStore
from genforge.stores.db import Database
from genforge.stores.secrets import SecretBox

log = logging.getLogger("genforge.runtime")


def claim_data_dir(settings: Settings) -> int:
    """One server per data directory: an exclusive flock on its server.lock, held while the process lives
    (the kernel releases it when the process dies, however it dies). A second server would take the first
    one's live jobs for a crash's leftovers; it refuses to start instead."""
    private_dir(settings.data_dir)
    path = settings.data_dir / "server.lock"
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        holder = path.read_text().strip() or "another process"
        raise AlreadyRunning(f"another genforge server (pid {holder}) is serving {settings.data_dir}") from None
    os.ftruncate(fd, 0)
    os.write(fd, str(os.getpid()).encode())
    return fd


def setup_logging(settings: Settings) -> None:
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("genforge.engine.output").setLevel(settings.engine_log_level.upper())


class Check(BaseModel):
    model_config = ConfigDict(extra="allow")  # a check may add its figures (pid, restarts, depth, running)

    ok: bool
    detail: str | None = Field(
        None, description="Why, with figures; shown to a valid API key only (to anyone while auth is off)."
    )


class Readiness(BaseModel):
    ready: bool = Field(description="Every check passed.")
    checks: dict[str, Check] = Field(
        description="database, default_text_model, engine_worker (pid, restarts), queue (depth, running)."
    )


@dataclass
class Runtime:
    settings: Settings
    db: Database
    catalog: ModelCatalog
    store: ArtifactStore
    worker: EnginePool
    runner: JobQueue
    service: ContentService
    personas: PersonaStore
    posts: PostService
    channels: ChannelStore
    webhooks: WebhookService
    publications: PublicationService
    publisher: PublisherLoop | None = None
    load_error: str | None = None
    preloaded: bool = False
    closed: bool = False
    _preloading: threading.Lock = field(default_factory=threading.Lock)

    @property
    def distributed(self) -> bool:
        """The celery mode's API or CLI: jobs run in `genforge worker` processes, no model loads here."""
        return not isinstance(self.runner, JobRunner)

    @property
    def embedded_runner(self) -> JobRunner:
        if not isinstance(self.runner, JobRunner):
            raise TypeError("the distributed mode has no embedded job runner")
        return self.runner

    @classmethod
    def open(cls, settings: Settings, recover: bool = False, worker: bool = False) -> Runtime:
        """Build the parts. Only the server recovers after a crash (`recover=True`): a CLI command run
        beside a live server must not mistake its running generations for interrupted ones. In the celery
        mode jobs live on in the workers, whose leases tell lost ones (distributed/celery_queue.py): nothing to recover.
        `worker=True` is a `genforge worker` process: it runs the jobs it takes, and leaves the schema to the
        API processes (it waits for their migration)."""
        private_dir(settings.data_dir)
        db = Database(settings.db_url)
        if worker:
            db.wait_migrated()
        else:
            db.migrate()
        records = SqlContentRecords(db)
        catalog = ModelCatalog(settings, db)
        store = ArtifactStore(settings.artifacts_dir)
        engines = EnginePool(settings)
        runner: JobQueue
        if settings.queue == "celery" and not worker:
            runner = CeleryJobRunner(settings, records)
        else:  # a worker's jobs come from Celery tasks, run by the task threads: no job threads here
            runner = JobRunner(workers=0 if worker else settings.parallel, queue_size=settings.queue_size)
        personas = PersonaStore(db)
        service = ContentService(settings, records, catalog, store, engines, runner, personas=personas)
        box = SecretBox(settings.data_dir)
        webhooks = WebhookService(
            db, box, allow_private=settings.webhook_addresses == "private", timeout_s=settings.webhook_timeout_s
        )
        posts = PostService(service, personas, events=webhooks)
        channels = ChannelStore(db, box)
        publications = PublicationService(
            posts, channels, webhooks, timeout_s=settings.publish_timeout_s, recheck_s=settings.recheck_interval_s
        )
        if recover and not (settings.queue == "celery" and not worker):
            service.recover()
            posts.recover()
        metrics.track_runner(runner)
        return cls(
            settings, db, catalog, store, engines, runner, service, personas, posts, channels, webhooks, publications
        )

    def start_publisher(self) -> None:
        """The server's background publishing (due publications, webhook deliveries): every API process runs
        one; each publication and delivery is claimed by compare-and-set, so exactly one process sends it."""
        if self.publisher is None:
            self.publisher = PublisherLoop(self.publications, self.webhooks, poll_s=self.settings.publish_poll_s)
            self.publisher.start()

    def preload(self) -> None:
        """Load the default text model into the engine worker so the first request is warm."""
        if self.distributed or not self._preloading.acquire(blocking=False):
            return
        try:
            model = self.catalog.resolve(self.settings.default_text_model)
        except GenforgeError as exc:  # not there (yet): readiness re-checks the file on every call
            self._preloading.release()
            log.warning("default model unavailable: %s (%s)", exc.message, exc.hint)
            return
        try:
            ms = self.worker.load(model)
            self.preloaded, self.load_error = True, None
            log.info("default model %s loaded in %.0f ms", model.name, ms)
        except GenforgeError as exc:  # present but unloadable: stays not ready until a load succeeds
            self.load_error = f"{exc.message} ({exc.hint})"
            log.warning("could not load the default model: %s", self.load_error)
        finally:
            self._preloading.release()

    def readiness(self) -> Readiness:
        checks = {}
        try:
            current, head = self.db.migration_state()
            self.db.check_writable()
            checks["database"] = {"ok": current == head, "detail": f"schema {current}, newest {head}, writable"}
        except GenforgeError as exc:  # a driver's error may quote its connection URL: never with the password
            checks["database"] = {"ok": False, "detail": redact_text(exc.message)}
        except Exception as exc:  # reported as not ready, with the reason
            checks["database"] = {"ok": False, "detail": f"unreachable: {redact_text(str(exc))}"}
        if isinstance(self.runner, CeleryJobRunner):  # the models are the workers' business: who serves what?
            ok, detail = self.runner.check()
            checks["workers"] = {"ok": ok, "detail": detail}
            checks["queue"] = {
                "ok": True,
                "depth": self.runner.depth,
                "running": self.runner.running,
                "detail": f"{self.runner.depth} waiting, {self.runner.running} running (all workers)",
            }
            return Readiness(ready=all(c["ok"] for c in checks.values()), checks=checks)
        try:
            model = self.catalog.resolve(self.settings.default_text_model)
            if not self.preloaded and self.load_error is None and self.settings.preload and not self.closed:
                threading.Thread(target=self.preload, name="genforge-preload", daemon=True).start()
            checks["default_text_model"] = {
                "ok": self.load_error is None,
                "detail": self.load_error or f"{model.name} present, sha256 {model.sha256[:12]}",
            }
        except GenforgeError as exc:
            checks["default_text_model"] = {"ok": False, "detail": f"{exc.message} ({exc.hint})"}
        checks["engine_worker"] = {
            "ok": True,
            "pid": self.worker.pid,
            "restarts": self.worker.restarts,
            "detail": "model loaded" if self.preloaded else "starts on demand",
        }
        checks["queue"] = {
            "ok": self.runner.depth < self.runner.queue_size,
            "depth": self.runner.depth,
            "running": self.runner.running,
            "detail": f"{self.runner.depth} waiting, {self.runner.running} running, {self.runner.queue_size} places",
        }
        return Readiness(ready=all(c["ok"] for c in checks.values()), checks=checks)

    def close(self, drain_s: float = 0.0) -> None:
        """Stop: let running jobs finish for up to `drain_s` seconds, record what is left `interrupted`."""
        self.closed = True
        if self.publisher is not None:
            self.publisher.stop()
        self.service.shutdown(drain_s)
        self.runner.close()
        self.worker.stop()
        self.db.dispose()


def run_worker(settings: Settings, types: list[str], concurrency: int) -> None:
    """`genforge worker`: a Celery worker (threads pool) whose tasks run in this process's engine workers."""
    if settings.worker_metrics_port:  # first: a port that is taken fails the start, before any engine work
        try:
            serve_worker_metrics(settings.host, settings.worker_metrics_port)
        except OSError as exc:
            raise Conflict(
                f"the worker's metrics port {settings.host}:{settings.worker_metrics_port} cannot be used: {exc}",
                field="worker_metrics_port",
                hint="Pick a free one with --metrics-port (GENFORGE_WORKER_METRICS_PORT), or 0 for none.",
            ) from exc
        log.info("generation metrics on http://%s:%d/", settings.host, settings.worker_metrics_port)
    app = celery_app(settings)
    rt = Runtime.open(settings, worker=True)
    side = WorkerSide(settings, rt.service, rt.service.records, app)

    @app.task(name=TASK, bind=True, max_retries=60)
    def run(task, content_id: str) -> None:
        try:
            side.run(content_id)
        except DatabaseUnavailable as exc:  # before the record was taken: try again shortly
            raise task.retry(countdown=2, exc=exc) from None

    threading.Thread(target=side.reap_forever, name="genforge-reaper", daemon=True).start()
    if "text" in types and settings.preload:
        threading.Thread(target=rt.preload, name="genforge-preload", daemon=True).start()
    name = f"genforge-{'+'.join(types)}-{os.getpid()}@{socket.gethostname()}"
    argv = ["worker", "--pool", "threads", "--concurrency", str(concurrency), "--hostname", name]
    argv += ["--queues", ",".join(queue_of(t) for t in types), "--without-gossip", "--without-mingle"]
    argv += ["--loglevel", settings.log_level.upper()]
    try:
        app.worker_main(argv)
    finally:
        side.stopping.set()
        rt.close()
