"""The engine contract: engine modules stand alone, and the worker runs both engine protocols.

The worker loop (`_Child`) runs here in a thread on one end of a pipe, with two test engines that declare
the two protocols: no model and no process are needed to see how it dispatches, interleaves and cancels.
"""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from multiprocessing import Pipe

import pytest

from genforge.config import Settings
from genforge.engines.base import (
    BatchingEngine,
    Done,
    EngineOutput,
    Failed,
    GenerationJob,
    OneAtATimeEngine,
    ResolvedModel,
    TextFacts,
    Update,
)
from genforge.engines.pool import CancelMsg, CoresLock, GenerateMsg, LoadMsg, StopMsg, WireError, _Child
from genforge.errors import Cancelled, ModelUnavailable

MODEL = ResolvedModel("m", "text", "test", "/nowhere", "0" * 64, 1, False)


def job(content_id: str) -> GenerationJob:
    return GenerationJob(content_id, "text", MODEL, "prompt", None, params=None)


def output(text: str) -> EngineOutput:
    return EngineOutput(text.encode(), "text/plain", "test", 0, 1, TextFacts(), text=text, finish_reason="stop")


class StepsEngine(OneAtATimeEngine):
    """One job at a time: three progress steps, checking for a cancel between them."""

    kind, content_types = "steps", ("text",)

    def load(self, model):
        return 1.5

    def generate(self, job, emit, cancelled):
        for step in (1, 2, 3):
            time.sleep(0.05)
            emit({"type": "progress", "step": step, "total": 3})
            if cancelled():
                raise Cancelled(f"cancelled after step {step}")
        return output("done")


class TokensEngine(BatchingEngine):
    """Batching: every step gives one token to every running job; a job ends after `length` tokens."""

    kind, content_types = "tokens", ("text",)

    def __init__(self, length: int = 4):
        self.length = length
        self.running: dict[str, int] = {}
        self.cancelled: set[str] = set()

    def load(self, model):
        raise ModelUnavailable("no such model here")

    def submit(self, job):
        self.running[job.content_id] = 0
        return []

    def cancel(self, job_id):
        self.cancelled.add(job_id)
        return []

    @property
    def busy(self):
        return bool(self.running)

    def step(self):
        time.sleep(0.01)
        events = []
        for job_id in list(self.running):
            if job_id in self.cancelled:
                del self.running[job_id]
                events.append(Failed(job_id, Cancelled("cancelled between tokens")))
                continue
            self.running[job_id] += 1
            events.append(Update(job_id, {"type": "token", "text": "t"}))
            if self.running[job_id] == self.length:
                del self.running[job_id]
                events.append(Done(job_id, output("t" * self.length)))
        return events


@pytest.fixture
def worker(tmp_path):
    """(send, messages): the parent's end of a pipe to a running worker loop with both test engines."""
    parent, child_end = Pipe()
    child = _Child(child_end, Settings(data_dir=tmp_path), CoresLock(str(tmp_path / "cores.lock")))
    child.engines = {"steps": StepsEngine(), "tokens": TokensEngine()}
    thread = threading.Thread(target=child.run, daemon=True)
    thread.start()

    def messages(until, timeout: float = 10) -> list[list]:
        """Pipe messages (each a list of events) until `until(events so far)` holds."""
        got, events, deadline = [], [], time.monotonic() + timeout
        while not until(events):
            assert parent.poll(max(0.0, deadline - time.monotonic())), f"no message; so far {events}"
            batch = parent.recv()
            got.append(batch)
            events.extend(batch)
        return got

    yield parent.send, messages
    parent.send(StopMsg())
    thread.join(timeout=10)
    assert not thread.is_alive()


def ended(*ids):
    return lambda events: {e.job_id for e in events if isinstance(e, Done | Failed)} >= set(ids)


def steps_job(content_id: str) -> GenerationJob:
    j = job(content_id)
    j.model = ResolvedModel("m", "text", "steps", "/nowhere", "0" * 64, 1, False)
    return j


def tokens_job(content_id: str) -> GenerationJob:
    j = job(content_id)
    j.model = ResolvedModel("m", "text", "tokens", "/nowhere", "0" * 64, 1, False)
    return j


def test_a_one_at_a_time_engine_streams_its_progress_then_its_output(worker):
    send, messages = worker
    send(GenerateMsg(steps_job("a")))
    events = [e for batch in messages(ended("a")) for e in batch]
    assert [e.event["step"] for e in events if isinstance(e, Update)] == [1, 2, 3]
    assert isinstance(events[-1], Done) and events[-1].output.text == "done"


def test_a_one_at_a_time_engine_sees_its_cancel_between_steps(worker):
    send, messages = worker
    send(GenerateMsg(steps_job("a")))
    send(CancelMsg("a"))
    events = [e for batch in messages(ended("a")) for e in batch]
    assert isinstance(events[-1], Failed) and isinstance(events[-1].error, WireError)
    assert isinstance(events[-1].error.error(), Cancelled)


def test_a_batching_engine_advances_every_job_in_one_step_and_one_message(worker):
    send, messages = worker
    send(GenerateMsg(tokens_job("a")))
    send(GenerateMsg(tokens_job("b")))
    batches = messages(ended("a", "b"))
    both = [b for b in batches if {e.job_id for e in b} == {"a", "b"}]
    assert both, f"no step advanced both jobs: {batches}"  # interleaved, one pipe message per step
    done = {e.job_id: e.output.text for b in batches for e in b if isinstance(e, Done)}
    assert done == {"a": "tttt", "b": "tttt"}


def test_a_batching_engine_is_cancelled_between_steps(worker):
    send, messages = worker
    send(GenerateMsg(tokens_job("a")))
    send(CancelMsg("a"))
    events = [e for batch in messages(ended("a")) for e in batch]
    assert isinstance(events[-1], Failed) and events[-1].error.name == "Cancelled"


def test_a_failing_load_comes_back_as_its_typed_error(worker):
    send, messages = worker
    send(LoadMsg("load-1", ResolvedModel("m", "text", "tokens", "/nowhere", "0" * 64, 1, False)))
    send(LoadMsg("load-2", ResolvedModel("m", "text", "steps", "/nowhere", "0" * 64, 1, False)))
    events = {e.job_id: e for batch in messages(ended("load-1", "load-2")) for e in batch}
    assert isinstance(events["load-1"], Failed) and isinstance(events["load-1"].error.error(), ModelUnavailable)
    assert isinstance(events["load-2"], Done) and events["load-2"].output == 1.5


def test_an_untyped_exception_crosses_the_pipe_as_engine_failed():
    err = WireError.of(RuntimeError("boom")).error()
    assert err.code == "engine_failed" and "RuntimeError: boom" in err.message


def test_importing_any_engine_loads_no_database_or_web_framework():
    """Engines know nothing of the database or HTTP: a fresh interpreter proves it for every engine module."""
    probe = (
        "import importlib, pkgutil, sys, genforge.engines as e\n"
        "mods = [m.name for m in pkgutil.iter_modules(e.__path__)]\n"
        "for m in mods: importlib.import_module('genforge.engines.' + m)\n"
        "bad = sorted({k.split('.')[0] for k in sys.modules} & {'sqlalchemy', 'alembic', 'fastapi', 'starlette'})\n"
        "print(len(mods), ','.join(bad) or '-')"
    )
    run = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    count, bad = run.stdout.split()
    assert int(count) >= 5 and bad == "-", run.stdout
