"""Runtime: builds the parts once (database, catalog, store, engine worker, service) for the API and CLI."""

from __future__ import annotations

import fcntl
import logging
import os
import threading
from dataclasses import dataclass, field

from pydantic import BaseModel, ConfigDict, Field

from genforge import metrics
from genforge.catalog import ModelCatalog
from genforge.config import Settings
from genforge.db import Database
from genforge.errors import AlreadyRunning, GenforgeError
from genforge.jobs import JobRunner
from genforge.posts import PostService
from genforge.redact import redact_text
from genforge.service import ContentService
from genforge.storage import ArtifactStore
from genforge.worker import EnginePool

log = logging.getLogger("genforge.runtime")


def claim_data_dir(settings: Settings) -> int:
    """One server per data directory: an exclusive flock on its server.lock, held while the process lives
    (the kernel releases it when the process dies, however it dies). A second server would take the first
    one's live jobs for a crash's leftovers; it refuses to start instead."""
    settings.data_dir.mkdir(parents=True, exist_ok=True)
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
    runner: JobRunner
    service: ContentService
    posts: PostService
    load_error: str | None = None
    preloaded: bool = False
    closed: bool = False
    _preloading: threading.Lock = field(default_factory=threading.Lock)

    @property
    def distributed(self) -> bool:
        """The celery mode's API or CLI: jobs run in `genforge worker` processes, no model loads here."""
        return not isinstance(self.runner, JobRunner)

    @classmethod
    def open(cls, settings: Settings, recover: bool = False, worker: bool = False) -> Runtime:
        """Build the parts. Only the server recovers after a crash (`recover=True`): a CLI command run
        beside a live server must not mistake its running generations for interrupted ones. In the celery
        mode jobs live on in the workers, whose leases tell lost ones (jobs_celery.py): nothing to recover.
        `worker=True` is a `genforge worker` process: it runs the jobs it takes, and leaves the schema to the
        API processes (it waits for their migration)."""
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        db = Database(settings.db_url)
        if worker:
            db.wait_migrated()
        else:
            db.migrate()
        catalog = ModelCatalog(settings, db)
        store = ArtifactStore(settings.artifacts_dir)
        engines = EnginePool(settings)
        if settings.queue == "celery" and not worker:
            from genforge.jobs_celery import CeleryJobRunner

            runner = CeleryJobRunner(settings, db)
        else:  # a worker's jobs come from Celery tasks, run by the task threads: no job threads here
            runner = JobRunner(workers=0 if worker else settings.parallel, queue_size=settings.queue_size)
        service = ContentService(settings, db, catalog, store, engines, runner)
        posts = PostService(service)
        if settings.queue == "celery" and not worker:
            runner.records = service.get
        elif recover:
            service.recover()
            posts.recover()
        metrics.track_runner(runner)
        return cls(settings, db, catalog, store, engines, runner, service, posts)

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
        if self.distributed:  # the models are the workers' business: are there workers, and what do they serve?
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
        self.service.shutdown(drain_s)
        self.runner.close()
        self.worker.stop()
        self.db.dispose()
