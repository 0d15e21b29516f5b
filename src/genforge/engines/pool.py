"""The engine worker: engines run in a supervised child process.

A native engine can crash its process (llama.cpp segfaults on some CPUs). Running it in a child
turns a crash into `engine_failed` on the requests that were in it; the supervisor starts a new
child (and reloads the last model) and the server keeps serving. Inside the child one thread owns
the cores: batching engines (llama.cpp) interleave all running jobs in one loop; other engines run
one job at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import itertools
import logging
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.connection import Connection
from typing import Any

from genforge import errors
from genforge.config import Settings
from genforge.engines import create_engine
from genforge.engines.base import (
    BatchingEngine,
    Done,
    Emit,
    EngineEvent,
    EngineOutput,
    Failed,
    GenerationJob,
    OneAtATimeEngine,
    ResolvedModel,
    Update,
)
from genforge.media.private import private_dir

log = logging.getLogger("genforge.engines.pool")
engine_log = logging.getLogger("genforge.engine.output")

CANCEL_GRACE_S = 5.0  # how long a timed-out job may take to stop before the worker is killed
STOP_SIGNALS = {signal.SIGINT, signal.SIGTERM}  # the server's to act on, never the engine worker's


# --- the pipe: small typed messages -------------------------------------------------------------------
@dataclass
class GenerateMsg:
    job: GenerationJob


@dataclass
class LoadMsg:
    request_id: str
    model: ResolvedModel


@dataclass
class CancelMsg:
    job_id: str


@dataclass
class StopMsg:
    pass


ParentMsg = GenerateMsg | LoadMsg | CancelMsg | StopMsg


@dataclass
class WireError:
    """A typed error as it crosses the pipe (exceptions with keyword-only arguments do not unpickle)."""

    name: str
    message: str
    hint: str | None
    field: str | None

    @classmethod
    def of(cls, exc: BaseException) -> WireError:
        if isinstance(exc, errors.GenforgeError):
            return cls(type(exc).__name__, exc.message, exc.hint, exc.field)
        return cls("EngineFailed", f"{type(exc).__name__}: {exc}", None, None)

    def error(self) -> errors.GenforgeError:
        cls = getattr(errors, self.name, None)
        if not (isinstance(cls, type) and issubclass(cls, errors.GenforgeError)):
            cls = errors.EngineFailed
        return cls(self.message, hint=self.hint, field=self.field)


@dataclass
class Dead:
    """Put in a waiting job's box by the reader thread when the worker process died."""

    job_id: str
    how: str


Message = Done | Failed | Dead  # what a waiting job's box receives: its answer, its (wire) error, or its end


def _from_wire(error: BaseException | WireError) -> errors.GenforgeError:
    """The typed error a Failed brought over the pipe (there its `error` is a WireError, see _to_wire)."""
    if isinstance(error, WireError):
        return error.error()
    return WireError.of(error).error()


def _to_wire(event: EngineEvent) -> EngineEvent:
    if isinstance(event, Failed):
        # On the pipe a Failed carries a WireError in place of the exception (which may not unpickle); the
        # parent's _wait turns it back into the typed error.
        return Failed(event.job_id, WireError.of(event.error))  # type: ignore[arg-type]  # the wire form
    return event


class CoresLock:
    """A lock on a file shared by every engine worker of a data directory: one engine computes at a time.

    Every engine uses all cores, and llama.cpp's threads busy-wait: two engines computing at once (text
    beside an image) collapse both. A file lock (flock) is released by the kernel when its holder dies,
    so a crashed worker never leaves the others waiting forever.
    """

    def __init__(self, path: str):
        self._fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)

    def __enter__(self) -> CoresLock:
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        return self

    def __exit__(self, *exc: object) -> None:
        fcntl.flock(self._fd, fcntl.LOCK_UN)


class _Child:
    """The loop inside the worker process."""

    def __init__(self, conn: Connection, settings: Settings, cores: CoresLock):
        self.conn = conn
        self.settings = settings
        self.cores = cores  # shared by all engine workers: one engine computes at a time
        self.engines: dict[str, OneAtATimeEngine | BatchingEngine] = {}
        self.later: deque[ParentMsg] = deque()  # messages that arrived while a one-at-a-time job ran

    def engine(self, kind: str) -> OneAtATimeEngine | BatchingEngine:
        if kind not in self.engines:
            self.engines[kind] = create_engine(kind, self.settings)
        return self.engines[kind]

    def batching(self) -> list[BatchingEngine]:
        return [e for e in self.engines.values() if isinstance(e, BatchingEngine)]

    def send(self, events: list[EngineEvent]) -> None:
        """One pipe message per step, however many sequences it advanced: a write and a wake-up each."""
        if events:
            self.conn.send([_to_wire(event) for event in events])

    def handle(self, msg: ParentMsg) -> bool:
        if isinstance(msg, StopMsg):
            return False
        try:
            if isinstance(msg, GenerateMsg):
                self.start(msg.job)
            elif isinstance(msg, CancelMsg):
                for engine in self.batching():  # one-at-a-time engines read their cancels between steps
                    self.send(engine.cancel(msg.job_id))
            elif isinstance(msg, LoadMsg):
                self.send([Done(msg.request_id, self.engine(msg.model.engine).load(msg.model))])
        except Exception as exc:  # every failure goes back to the parent as a typed error
            job_id = msg.job.content_id if isinstance(msg, GenerateMsg) else getattr(msg, "request_id", "")
            self.send([Failed(job_id, exc)])
        return True

    def start(self, job: GenerationJob) -> None:
        engine = self.engine(job.model.engine)
        if isinstance(engine, BatchingEngine):
            self.send(engine.submit(job))
            return
        with self.cores if engine.uses_cores else contextlib.nullcontext():  # one job at a time
            out = engine.generate(
                job,
                lambda ev: self.send([Update(job.content_id, ev)]),
                lambda: self.cancel_requested(job.content_id),
            )
        self.send([Done(job.content_id, out)])

    def cancel_requested(self, job_id: str) -> bool:
        """For engines that check between steps: read what has arrived; keep all but this job's cancel."""
        cancelled = False
        while self.conn.poll(0):
            msg = self.conn.recv()
            if isinstance(msg, CancelMsg) and msg.job_id == job_id:
                cancelled = True
            else:
                self.later.append(msg)
        return cancelled

    def next_message(self, block: bool) -> ParentMsg | None:
        if self.later:
            return self.later.popleft()
        if block or self.conn.poll(0):
            return self.conn.recv()
        return None

    def run(self) -> None:
        while True:
            busy = [e for e in self.batching() if e.busy]
            # Block for the next message when idle; between steps take whatever has arrived.
            while (msg := self.next_message(block=not busy)) is not None:
                if not self.handle(msg):
                    return
                busy = [e for e in self.batching() if e.busy]
            for engine in busy:
                with self.cores:
                    events = engine.step()
                self.send(events)


def worker_main(conn: Connection) -> None:
    """Child process entry point. Never returns on its own while the parent lives."""
    # The parent decides when we stop. Ctrl-C (SIGINT), systemd and `timeout` (SIGTERM to every process of
    # the service) reach this process too; dying first would look like a crash to the supervisor, which
    # would log it and start a new worker in the middle of the shutdown. (In the fraction of a second
    # before this line runs they still end the process.)
    # Without a parent the pipe ends (EOFError, or a broken pipe on send); a stuck worker still yields to SIGKILL.
    for sig in STOP_SIGNALS:
        signal.signal(sig, signal.SIG_IGN)
    try:
        settings = Settings.model_validate_json(conn.recv())
        private_dir(settings.data_dir)
        _Child(conn, settings, CoresLock(str(settings.data_dir / ".engine-cores.lock"))).run()
    except (EOFError, BrokenPipeError, ConnectionResetError):  # the parent is gone
        return


# How EngineWorker starts a child (`-c`, not `-m`: under -m this module would be `__main__`, and the messages the
# parent pickles as genforge.engines.pool.GenerateMsg would not be instances of `__main__.GenerateMsg`).
CHILD_COMMAND = "import sys; from genforge.engines.pool import child_main; child_main(int(sys.argv[1]))"


def child_main(fd: int) -> None:
    worker_main(Connection(fd))


# --- the parent side ----------------------------------------------------------------------------------
class EngineWorker:
    """Supervises one engine child process and multiplexes jobs over its pipe."""

    def __init__(self, settings: Settings, loop: asyncio.AbstractEventLoop | None = None, loop_thread: int = 0):
        self.settings = settings
        self._loop, self._loop_thread = loop, loop_thread  # the server's event loop reads the pipe (see _watch)
        self._watched: set[int] = set()  # the pipe fds the loop reads
        self._lock = threading.Lock()  # guards the process, the pipe and the job table together
        self._proc: subprocess.Popen[bytes] | None = None
        self._conn: Connection | None = None
        self._jobs: dict[str, tuple[queue.Queue[Message], Emit | None]] = {}  # job id -> (final answer box, emit)
        self._ids = itertools.count()
        self._last_model: ResolvedModel | None = None
        self._stopping = False
        self.restarts = 0

    @property
    def pid(self) -> int | None:
        proc = self._proc
        return proc.pid if proc is not None and proc.poll() is None else None

    def _start_locked(self) -> None:
        """A fresh interpreter running only this module (CHILD_COMMAND), not a multiprocessing
        spawn: that would import the server's main module (the CLI, SQLAlchemy, Alembic) into the engine
        process and start a resource-tracker process beside it, about 50 MB that no engine uses."""
        ours, theirs = socket.socketpair()
        proc = subprocess.Popen([sys.executable, "-c", CHILD_COMMAND, str(theirs.fileno())], pass_fds=[theirs.fileno()])
        theirs.close()
        parent = Connection(ours.detach())
        parent.send(self.settings.model_dump_json())
        self._proc, self._conn = proc, parent
        if self._loop is not None:
            self._loop.call_soon_threadsafe(self._watch, proc, parent)
        else:
            threading.Thread(target=self._read, args=(proc, parent), name="genforge-engine-reader", daemon=True).start()
        log.info("engine worker started pid=%s", proc.pid)

    # The child's messages are read by the server's event loop when it has one (attach_loop): a token then
    # wakes one thread, the loop, which writes it to the client. Without a loop (the CLI, a celery worker) a
    # reader thread reads them. Either way they are routed the same (_route), and the end of the pipe is the
    # child's death (_exited).
    def _read(self, proc: subprocess.Popen[bytes], conn: Connection) -> None:
        while True:
            try:
                messages = conn.recv()
            except (EOFError, OSError):
                break
            self._route(messages)
        self._exited(proc)

    def _watch(self, proc: subprocess.Popen[bytes], conn: Connection) -> None:  # on the loop
        if not conn.closed:
            fd = conn.fileno()
            self._event_loop().add_reader(fd, self._readable, proc, conn)
            # uvloop (libuv) makes a watched fd non-blocking, and Connection.recv() then raises BlockingIOError
            # in the middle of a message larger than the socket's buffer (a 1024x1024 PNG): that read as the
            # child's death, and the worker was killed. The loop only waits for readability; recv() must block.
            os.set_blocking(fd, True)
            self._watched.add(fd)

    def _readable(self, proc: subprocess.Popen[bytes], conn: Connection) -> None:
        try:
            messages = conn.recv()  # a whole message: the child writes each one at once
        except (EOFError, OSError):
            self._stop_reading(conn.fileno())
            # Reaping waits for the process: not on the loop.
            threading.Thread(target=self._exited, args=(proc,), name="genforge-engine-reaper", daemon=True).start()
            return
        self._route(messages)

    def _stop_reading(self, fd: int) -> None:  # on the loop
        self._event_loop().remove_reader(fd)
        self._watched.discard(fd)

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        """The loop that reads the pipes; only called where one was given (a watched fd implies it)."""
        if self._loop is None:
            raise errors.EngineFailed("the engine worker's pipe is read by a thread here, not by an event loop")
        return self._loop

    def _unwatch(self, conn: Connection) -> None:
        """Stop the loop reading `conn` before it is closed (its fd number may be reused at once)."""
        fd = conn.fileno()
        if self._loop is None or fd not in self._watched or self._loop.is_closed():
            return
        if threading.get_ident() == self._loop_thread:
            self._stop_reading(fd)
            return
        removed = threading.Event()

        def stop_reading() -> None:
            self._stop_reading(fd)
            removed.set()

        self._loop.call_soon_threadsafe(stop_reading)
        removed.wait(timeout=5)

    def _route(self, messages: list[EngineEvent]) -> None:
        """Token and progress events go straight to the job's `emit` (no hop through the waiting thread, which
        only takes the final answer), in the order the engine produced them."""
        for message in messages:
            job_id = message.job_id
            box, emit = self._jobs.get(job_id, (None, None))  # one dict read: atomic, no lock needed
            if box is None:
                continue
            if not isinstance(message, Update):
                box.put(message)
                continue
            event = message.event
            if event.get("type") == "token":  # user data: at DEBUG only (GENFORGE_ENGINE_LOG_LEVEL=DEBUG opts in)
                engine_log.debug("content=%s %r", job_id, event["text"])
            if emit is not None:
                try:
                    emit(event)
                except Exception as exc:  # a broken listener fails its own job, never the reader
                    log.exception("content=%s event listener failed; cancelling the job", job_id)
                    self._cancel(job_id)
                    box.put(Failed(job_id, exc))  # in this process: _wait types it as the child's errors

    def _exited(self, proc: subprocess.Popen[bytes]) -> None:
        """The child's pipe ended: unless we stopped it, fail its jobs and start a new child."""
        with self._lock:
            if self._stopping or proc is not self._proc:
                return
            how = self._reap_locked()
            self.restarts += 1
            log.error("engine worker %s; failing %d running job(s) and restarting it", how, len(self._jobs))
            for job_id, (box, _) in self._jobs.items():
                box.put(Dead(job_id, how))
            self._jobs.clear()
            self._start_locked()
            if self._last_model is not None:  # keep the next request warm
                reload_id = f"reload-{next(self._ids)}"
                self._send_locked(reload_id, LoadMsg(reload_id, self._last_model), None)

    def _reap_locked(self) -> str:
        proc, conn = self._proc, self._conn
        if proc is None or conn is None:  # callers (_exited, stop) have seen the child running, under the lock
            raise errors.EngineFailed("there is no engine worker process to stop")
        if proc.poll() is None:
            proc.kill()
        proc.wait(timeout=10)
        self._unwatch(conn)
        conn.close()
        self._proc = self._conn = None
        code = proc.returncode
        if code is not None and code < 0:
            return f"was killed by {signal.Signals(-code).name}"
        return f"exited with code {code}"

    def _send_locked(
        self, job_id: str, msg: ParentMsg, box: queue.Queue[Message] | None, emit: Emit | None = None
    ) -> None:
        if self._proc is None:
            self._start_locked()
        if self._conn is None:  # _start_locked sets both
            raise errors.EngineFailed("the engine worker process has no pipe")
        if box is not None:
            self._jobs[job_id] = (box, emit)
        self._conn.send(msg)

    def _submit(self, job_id: str, msg: ParentMsg, emit: Emit | None = None) -> queue.Queue[Message]:
        box: queue.Queue[Message] = queue.Queue()
        with self._lock:
            if self._stopping:  # shut down with its runtime: never start a new engine process
                raise errors.EngineFailed("the engine worker has been stopped (the server is shutting down)")
            self._send_locked(job_id, msg, box, emit)
        return box

    def _cancel(self, job_id: str) -> None:
        with self._lock:
            if self._conn is not None and job_id in self._jobs:
                self._conn.send(CancelMsg(job_id))

    def _kill(self) -> None:
        with self._lock:
            if self._proc is not None:
                self._proc.kill()  # the reader thread sees it die, fails the jobs and restarts

    def _wait(
        self, job_id: str, box: queue.Queue[Message], timeout: float, cancel: threading.Event | None
    ) -> Any:  # what the engine answered: an EngineOutput for a job, the load's milliseconds for a load
        deadline = time.monotonic() + timeout
        cancel_sent = timed_out = False
        try:
            while True:
                if cancel is not None and cancel.is_set() and not cancel_sent:
                    self._cancel(job_id)
                    cancel_sent = True
                if not timed_out and time.monotonic() > deadline:
                    timed_out = True
                    self._cancel(job_id)
                    deadline = time.monotonic() + CANCEL_GRACE_S
                elif timed_out and time.monotonic() > deadline:
                    log.warning("content=%s did not stop after its timeout; killing the engine worker", job_id)
                    self._kill()
                    raise errors.GenerationTimeout(f"generation did not finish within {timeout:.0f} s")
                try:
                    message = box.get(timeout=0.1)
                except queue.Empty:
                    continue
                if isinstance(message, Done):
                    return message.output
                elif isinstance(message, Dead):
                    raise errors.EngineFailed(f"the engine worker process {message.how} during generation")
                else:
                    err = _from_wire(message.error)
                    if timed_out and isinstance(err, errors.Cancelled):
                        raise errors.GenerationTimeout(f"generation did not finish within {timeout:.0f} s")
                    raise err
        finally:
            with self._lock:
                self._jobs.pop(job_id, None)

    def load(self, model: ResolvedModel, timeout: float = 300) -> float:
        job_id = f"load-{next(self._ids)}"
        ms = self._wait(job_id, self._submit(job_id, LoadMsg(job_id, model)), timeout, None)
        self._last_model = model
        return ms

    def generate(
        self,
        job: GenerationJob,
        emit: Emit | None = None,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
        started: Callable[[], None] | None = None,
    ) -> EngineOutput:
        """Run a job in the engine process. `started` runs as soon as the job is on its way there, so that what
        it does (the record's `running` commit) overlaps the engine's first step; if it fails, the job is
        cancelled and its error raised."""
        box = self._submit(job.content_id, GenerateMsg(job), emit)
        if started is not None:
            try:
                started()
            except BaseException:
                self._cancel(job.content_id)
                with contextlib.suppress(errors.GenforgeError):  # stopped: what matters is why we stopped it
                    self._wait(job.content_id, box, CANCEL_GRACE_S, None)
                raise
        out = self._wait(job.content_id, box, timeout or self.settings.generation_timeout_s, cancel)
        self._last_model = job.model
        return out

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            proc, conn = self._proc, self._conn
            if proc is None or conn is None:
                return
            try:
                conn.send(StopMsg())
            except OSError:
                log.info("engine worker already gone at stop")
            with contextlib.suppress(subprocess.TimeoutExpired):  # still busy: _reap_locked kills it
                proc.wait(timeout=5)
            self._reap_locked()


def _worker_key(model: ResolvedModel) -> str:
    return "remote" if model.engine == "remote" else model.content_type


class EnginePool:
    """One supervised engine worker per content type, so a slow image never stalls streaming text."""

    def __init__(self, settings: Settings):
        self.settings = settings
        self._workers: dict[str, EngineWorker] = {}
        self._lock = threading.Lock()
        self._stopped = False
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_thread = 0

    def attach_loop(self) -> None:
        """Called on the server's event loop: it reads the pipes of the workers made from now on (EngineWorker)."""
        self._loop, self._loop_thread = asyncio.get_running_loop(), threading.get_ident()

    def worker(self, content_type: str) -> EngineWorker:
        """The worker of a content type; remote models get one of their own (key "remote"), so that a
        relayed stream never holds up the local engine of the same type."""
        with self._lock:
            if self._stopped:  # a late caller (a preload racing shutdown) must not start an engine process
                raise errors.EngineFailed("the engine workers have been stopped (the server is shutting down)")
            if content_type not in self._workers:
                self._workers[content_type] = EngineWorker(self.settings, self._loop, self._loop_thread)
            return self._workers[content_type]

    @property
    def pid(self) -> int | None:
        """The text engine's worker process (the one most requests use)."""
        worker = self._workers.get("text")
        return worker.pid if worker else None

    @property
    def restarts(self) -> int:
        return sum(w.restarts for w in self._workers.values())

    def load(self, model: ResolvedModel, timeout: float = 300) -> float:
        return self.worker(_worker_key(model)).load(model, timeout)

    def generate(
        self,
        job: GenerationJob,
        emit: Emit | None = None,
        timeout: float | None = None,
        cancel: threading.Event | None = None,
        started: Callable[[], None] | None = None,
    ) -> EngineOutput:
        worker = self.worker(_worker_key(job.model))
        return worker.generate(job, emit=emit, timeout=timeout, cancel=cancel, started=started)

    def stop(self) -> None:
        with self._lock:
            self._stopped = True
            workers = list(self._workers.values())
        for worker in workers:
            worker.stop()
