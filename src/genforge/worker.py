"""The engine worker: engines run in a supervised child process.

A native engine can crash its process (llama.cpp segfaults on some CPUs). Running it in a child
turns a crash into `engine_failed` on the request that hit it; the supervisor starts a new child
and the server keeps serving. One engine thread owns the cores (see DESIGN.md on threads).
"""

from __future__ import annotations

import logging
import multiprocessing as mp
import signal
import threading
import time
from multiprocessing.connection import wait

from genforge import errors
from genforge.catalog import ResolvedModel
from genforge.config import Settings
from genforge.engines.base import Emit, EngineOutput, GenerationJob

log = logging.getLogger("genforge.worker")
engine_log = logging.getLogger("genforge.engine.output")


def _error_to_wire(exc: BaseException) -> tuple:
    if isinstance(exc, errors.GenforgeError):
        return ("error", type(exc).__name__, exc.message, exc.hint, exc.field)
    return ("error", "EngineFailed", f"{type(exc).__name__}: {exc}", None, None)


def _error_from_wire(name: str, message: str, hint: str | None, field: str | None) -> errors.GenforgeError:
    cls = getattr(errors, name, None)
    if not (isinstance(cls, type) and issubclass(cls, errors.GenforgeError)):
        cls = errors.EngineFailed
    return cls(message, hint=hint, field=field)


def _engine_for(kind: str, settings: Settings, engines: dict):
    if kind not in engines:
        if kind == "llama.cpp":
            from genforge.engines.llama import LlamaEngine

            engines[kind] = LlamaEngine(n_threads=settings.n_threads, n_ctx=settings.context_size)
        else:
            raise errors.ModelUnavailable(f"no engine {kind!r} in this worker")
    return engines[kind]


def worker_main(conn, cancel_event, settings_json: str) -> None:
    """Child process: receive jobs, run engines, send events back. Never returns on its own."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides when we stop
    settings = Settings.model_validate_json(settings_json)
    engines: dict = {}
    while True:
        try:
            msg = conn.recv()
        except EOFError:
            return
        op = msg[0]
        try:
            if op == "stop":
                return
            if op == "load":
                model: ResolvedModel = msg[1]
                ms = _engine_for(model.engine, settings, engines).load(model)
                conn.send(("loaded", ms))
            elif op == "generate":
                job: GenerationJob = msg[1]
                engine = _engine_for(job.model.engine, settings, engines)
                out = engine.generate(job, lambda ev: conn.send(("event", ev)), cancel_event.is_set)
                conn.send(("done", out))
        except Exception as exc:  # every failure goes back to the parent as a typed error
            conn.send(_error_to_wire(exc))


class EngineWorker:
    """Supervises one engine child process and runs one job at a time on it."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._ctx = mp.get_context("spawn")
        self._lock = threading.Lock()
        self._proc = None
        self._conn = None
        self._cancel = self._ctx.Event()
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc and self._proc.is_alive() else None

    def start(self) -> None:
        parent, child = self._ctx.Pipe()
        self._proc = self._ctx.Process(target=worker_main, args=(child, self._cancel, self.settings.model_dump_json()),
                                       name="genforge-engine", daemon=True)
        self._proc.start()
        child.close()
        self._conn = parent
        log.info("engine worker started pid=%s", self._proc.pid)

    def _ensure_running(self) -> None:
        if self._proc is None or not self._proc.is_alive():
            self.start()

    def _reap(self) -> str:
        """Collect a dead (or wedged) child and describe how it ended."""
        proc = self._proc
        if proc.is_alive():
            proc.kill()
        proc.join(timeout=10)
        code = proc.exitcode
        self._conn.close()
        self._proc = self._conn = None
        self.restarts += 1
        if code is not None and code < 0:
            return f"killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def stop(self) -> None:
        with self._lock:
            if self._proc is None:
                return
            try:
                self._conn.send(("stop",))
                self._proc.join(timeout=5)
            except OSError:
                pass  # already gone; _reap below collects it either way
            self._reap()

    def _exchange(self, request: tuple, emit: Emit | None, timeout: float, cancel: threading.Event | None,
                  content_id: str | None = None):
        """Send one request and pump its events until the answer; turn a dead child into EngineFailed."""
        with self._lock:
            self._ensure_running()
            self._cancel.clear()
            self._conn.send(request)
            deadline = time.monotonic() + timeout
            while True:
                if cancel is not None and cancel.is_set():
                    self._cancel.set()  # the engine stops between tokens and answers Cancelled
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    how = self._reap()
                    log.warning("content=%s generation timed out after %.0f s; engine worker %s, restarting",
                                content_id, timeout, how)
                    self.start()
                    raise errors.GenerationTimeout(f"generation did not finish within {timeout:.0f} s")
                ready = wait([self._conn, self._proc.sentinel], timeout=min(remaining, 0.25))
                if not ready:
                    continue
                try:
                    if self._conn not in ready and not self._conn.poll():
                        raise EOFError
                    msg = self._conn.recv()
                except (EOFError, OSError):
                    how = self._reap()
                    log.error("content=%s engine worker %s mid-request; restarting it", content_id, how)
                    self.start()
                    raise errors.EngineFailed(f"the engine worker process {how} during generation") from None
                kind = msg[0]
                if kind == "event":
                    event = msg[1]
                    if event.get("type") == "token":
                        engine_log.info("content=%s %r", content_id, event["text"])
                    if emit is not None:
                        emit(event)
                elif kind == "error":
                    raise _error_from_wire(*msg[1:])
                else:
                    return msg[1]

    def load(self, model: ResolvedModel, timeout: float = 300) -> float:
        return self._exchange(("load", model), None, timeout, None)

    def generate(self, job: GenerationJob, emit: Emit | None = None, timeout: float | None = None,
                 cancel: threading.Event | None = None) -> EngineOutput:
        return self._exchange(("generate", job), emit, timeout or self.settings.generation_timeout_s, cancel,
                              content_id=job.content_id)
