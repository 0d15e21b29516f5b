"""JobRunner: a bounded queue and a pool of executor threads, with per-job event streams.

The service hands the runner a callable per content id; the runner decides when it runs, lets it
be cancelled, and fans its events out to listeners (the sync caller, SSE clients). A Celery backend
can implement the same four calls (submit, get, position, cancel) without touching the service's
callers or the routers.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from typing import Any, Generic, Literal, Protocol, TypeVar

from genforge.contenttypes import ContentRecord
from genforge.errors import GenforgeError, QueueFull, ShuttingDown

log = logging.getLogger("genforge.core.jobs")


Event = dict[str, Any]  # {"type": "token" | "progress" | "retry" | "part" | "final", ...}; "final" ends a stream
Listener = Callable[[Event], None]


R = TypeVar("R")  # what a stream ends with: a record (a job), a post


class EventStream(Generic[R]):
    """Events of one piece of work, fanned out to listeners (the sync caller, SSE clients, a post's stream):
    `publish` from the working thread, `listen` (with the history replayed) from anywhere, and `finish` once,
    which publishes the closing {"type": "final"} and sets `done`. Jobs are event streams; a post is one too."""

    def __init__(self, key: str):
        self.key = key
        self.done = threading.Event()
        self.result: R | None = None  # what it ended with, once it succeeded
        self.error: GenforgeError | None = None
        self.history: list[Event] = []
        self._listeners: list[Listener] = []
        self._lock = threading.Lock()

    def publish(self, event: Event) -> None:
        """Record an event and hand it to every listener (called from the executing thread)."""
        with self._lock:
            self.history.append(event)
            listeners = list(self._listeners)
        for listener in listeners:
            listener(event)

    def listen(self, listener: Listener, replay: bool = True) -> None:
        """Receive every event from now on (and, with replay, those already published)."""
        with self._lock:
            past = list(self.history) if replay else []
            self._listeners.append(listener)
        for event in past:
            listener(event)

    def unlisten(self, listener: Listener) -> None:
        with self._lock:
            if listener in self._listeners:
                self._listeners.remove(listener)

    @property
    def listeners(self) -> int:
        with self._lock:
            return len(self._listeners)

    @contextmanager
    def events_async(self) -> Iterator[asyncio.Queue[Event]]:
        """An asyncio queue fed with this stream's events (history first) while the block runs, for SSE responses.
        The listener goes when the block ends, however it ends: a client that disconnects (the response's task
        is cancelled) leaves nothing behind on the stream."""
        loop, loop_thread = asyncio.get_running_loop(), threading.get_ident()
        q: asyncio.Queue[Event] = asyncio.Queue()

        def put(event: Event) -> None:  # engine events come on the loop itself (engines/pool.py) or from a thread
            if threading.get_ident() == loop_thread:
                q.put_nowait(event)
            else:
                with suppress(RuntimeError):  # the loop has closed (shutdown): nobody reads the queue any more
                    loop.call_soon_threadsafe(q.put_nowait, event)

        self.listen(put)
        try:
            yield q
        finally:
            self.unlisten(put)

    async def outcome(self) -> R:
        """Wait for the end on the event loop, holding no thread (a sync HTTP request waits with this, not with a
        pool thread blocked on `done`): the final result, or the error raised."""
        loop = asyncio.get_running_loop()
        ended: asyncio.Future[None] = loop.create_future()

        def settle() -> None:
            if not ended.done():
                ended.set_result(None)

        def on_event(event: Event) -> None:
            if event["type"] == "final":
                with suppress(RuntimeError):  # the loop has closed (shutdown): nobody waits any more
                    loop.call_soon_threadsafe(settle)

        self.listen(on_event)  # with the history: a job that already ended settles at once
        try:
            await ended
        finally:
            self.unlisten(on_event)
        return self.ended()

    def ended(self) -> R:
        """What the finished stream ended with: its result, or its error raised."""
        if self.error is not None:
            raise self.error
        if self.result is None:
            raise GenforgeError(f"internal error: {self.key} ended with neither a result nor an error")
        return self.result

    def finish(self, result: R | None, error: GenforgeError | None) -> None:
        self.result, self.error = result, error
        self.publish({"type": "final"})
        self.done.set()


class Job(EventStream[ContentRecord]):
    """A content record's work: its event stream, its cancel flag, and (in the embedded runner) what runs it."""

    def __init__(self, content_id: str, run: Callable[[Job], ContentRecord] | None = None):
        super().__init__(content_id)
        self.content_id = content_id
        self.run = run  # returns the final record; None where another process runs it (distributed mode)
        self.cancel = threading.Event()
        self.state: JobState = "queued"

    def finish(self, result: ContentRecord | None, error: GenforgeError | None) -> None:
        self.state = "finished"
        super().finish(result, error)


JobState = Literal["queued", "running", "finished"]


class JobQueue(Protocol):
    """Where accepted records wait and run: the in-process `JobRunner` here, or the distributed runner
    (genforge.distributed.celery_queue.CeleryJobRunner). The service and the routes use only this."""

    queue_size: int

    @property
    def depth(self) -> int: ...

    @property
    def running(self) -> int: ...

    @property
    def closed(self) -> bool: ...

    def submit(
        self,
        content_id: str,
        run: Callable[[Job], ContentRecord],
        on_accept: Callable[[], None] | None = None,
        content_type: str | None = None,
    ) -> Job: ...

    def get(self, content_id: str) -> Job | None: ...

    def position(self, content_id: str) -> int | None: ...

    def cancel(self, content_id: str) -> Job | None: ...

    def drain(self, timeout: float) -> tuple[list[Job], list[Job]]: ...

    def close(self) -> None: ...


class JobRunner:
    """The embedded JobQueue: a bounded queue in front of `workers` job threads."""

    def __init__(self, workers: int, queue_size: int):
        self.workers = workers
        self.queue_size = queue_size
        self._queue: deque[Job] = deque()
        self._jobs: dict[str, Job] = {}
        self._cond = threading.Condition()
        self._closed = False
        self._reserved = 0  # places taken by submits that are still writing their record
        self._running = 0
        self._threads = [
            threading.Thread(target=self._loop, name=f"genforge-job-{i}", daemon=True) for i in range(workers)
        ]
        for t in self._threads:
            t.start()

    def submit(
        self,
        content_id: str,
        run: Callable[[Job], ContentRecord],
        on_accept: Callable[[], None] | None = None,
        content_type: str | None = None,
    ) -> Job:
        """Queue a job, or raise QueueFull. `on_accept` runs (e.g. writes the record) only if it has a place.
        (`content_type` routes a job in the distributed runner, jobs_celery.py; all run here.)

        The place is reserved under the lock and `on_accept` runs outside it: a slow database write must not
        hold up other submits, cancels, or the job threads taking work."""
        with self._cond:
            if self._closed:
                raise ShuttingDown("the server is shutting down and accepts no new work", details={"retry_after": 5})
            if len(self._queue) + self._reserved >= self.queue_size:
                raise QueueFull(
                    f"the queue is full ({self.queue_size} waiting)",
                    details={"retry_after": 1 + len(self._queue) // max(1, self.workers)},
                )
            self._reserved += 1
        try:
            if on_accept is not None:
                on_accept()
        except BaseException:
            with self._cond:
                self._reserved -= 1
            raise
        job = Job(content_id, run)
        with self._cond:
            self._reserved -= 1
            self._queue.append(job)
            self._jobs[content_id] = job
            self._cond.notify()
        return job

    def get(self, content_id: str) -> Job | None:
        return self._jobs.get(content_id)

    def position(self, content_id: str) -> int | None:
        """1-based place in the queue while waiting; None once running or unknown."""
        with self._cond:
            for i, job in enumerate(self._queue):
                if job.content_id == content_id:
                    return i + 1
        return None

    @property
    def depth(self) -> int:
        return len(self._queue)

    @property
    def running(self) -> int:
        return self._running

    def cancel(self, content_id: str) -> Job | None:
        """Remove a waiting job (returned finished) or signal a running one; None when unknown."""
        with self._cond:
            job = self._jobs.get(content_id)
            if job is None:
                return None
            job.cancel.set()
            if job in self._queue:
                self._queue.remove(job)
                self._jobs.pop(content_id, None)
                return job
        return job

    def _loop(self) -> None:
        while True:
            with self._cond:
                while not self._queue and not self._closed:
                    self._cond.wait()
                if self._closed:
                    return
                job = self._queue.popleft()
                job.state = "running"
                self._running += 1
            try:
                if job.run is None:
                    raise GenforgeError("internal error: a job with nothing to run was queued")
                job.finish(job.run(job), None)
            except GenforgeError as exc:
                job.finish(None, exc)
            except Exception as exc:  # the service turns failures into GenforgeErrors; this is a last guard
                log.exception("content=%s job crashed", job.content_id)
                job.finish(
                    None, GenforgeError(f"internal error: {type(exc).__name__}: {exc}", content_id=job.content_id)
                )
            finally:
                with self._cond:
                    self._running -= 1
                    self._jobs.pop(job.content_id, None)

    @property
    def closed(self) -> bool:
        return self._closed

    def drain(self, timeout: float) -> tuple[list[Job], list[Job]]:
        """Stop taking work: (the jobs that were still queued, removed unrun; those still running after
        `timeout` seconds, which are told to cancel). New submits raise ShuttingDown from now on."""
        with self._cond:
            self._closed = True
            queued = list(self._queue)
            self._queue.clear()
            for job in queued:
                self._jobs.pop(job.content_id, None)
                job.cancel.set()
            self._cond.notify_all()
        deadline = time.monotonic() + timeout
        while self._running and time.monotonic() < deadline:
            time.sleep(0.1)
        with self._cond:
            left = [job for job in self._jobs.values() if job.state == "running"]
        for job in left:
            job.cancel.set()
        return queued, left

    def close(self) -> None:
        with self._cond:
            self._closed = True
            for job in self._queue:
                job.cancel.set()
            self._cond.notify_all()
