"""The core's declared interfaces against their implementations: the record store's transition table (a real
SQLite database), the embedded job queue, the caller's checks, the one error table."""

from __future__ import annotations

import threading

import pytest

from genforge import errors
from genforge.core.caller import LOCAL, Caller
from genforge.core.jobs import EventStream, Job, JobQueue, JobRunner
from genforge.core.records import (
    TRANSITIONS,
    ContentRecordStore,
    InvalidTransition,
    Outcome,
    PendingRecord,
    SqlContentRecords,
    checked_extra,
)
from genforge.engines.base import EngineClient
from genforge.engines.pool import EnginePool
from genforge.errors import BY_CODE, Forbidden, GenforgeError, Interrupted, NotFound, error_class
from genforge.stores.db import Database

PARAMS = {"max_tokens": 4, "temperature": 0.0, "top_p": 1.0, "seed": 1, "stop": []}


@pytest.fixture
def records(tmp_path) -> SqlContentRecords:
    db = Database(f"sqlite:///{tmp_path / 'g.db'}")
    db.migrate()
    return SqlContentRecords(db)


def pending(records: SqlContentRecords, content_id: str = "r1", owner: str | None = "k1") -> str:
    records.accept(
        PendingRecord(
            id=content_id,
            content_type="text",
            prompt="Say hi.",
            system=None,
            quality="standard",
            params=PARAMS,
            model_name="smollm2-135m-instruct",
            extra={},
            owner=owner,
            persona_name=None,
            persona_version=None,
        )
    )
    return content_id


def outcome() -> Outcome:
    return Outcome(
        params=PARAMS,
        engine_version="test",
        engine="llama.cpp",
        text="hi",
        finish_reason="stop",
        prompt_tokens=3,
        completion_tokens=1,
        extra={"ttft_ms": 1.0},
        artifact_sha256="0" * 64,
        artifact_size=2,
        artifact_media_type="text/plain",
        artifact_path="00/0.txt",
        load_ms=0.0,
        generate_ms=1.0,
        total_ms=2.0,
    )


def test_the_sql_store_and_the_engine_pool_implement_their_declared_interfaces(records):
    store: ContentRecordStore = records  # checked by mypy; here: the methods exist
    for name in ContentRecordStore.__dict__:
        if not name.startswith("_"):
            assert callable(getattr(store, name)), name
    for name in ("generate", "load", "stop"):
        assert callable(getattr(EnginePool, name)), name
    assert EngineClient and JobQueue  # declared, importable


def test_the_transition_table_is_the_lifecycle():
    assert TRANSITIONS["pending"] == {"running", "cancelled", "failed"}
    assert TRANSITIONS["running"] == {"succeeded", "failed", "cancelled", "pending"}
    assert TRANSITIONS["succeeded"] == {"failed"} and not TRANSITIONS["failed"] and not TRANSITIONS["cancelled"]


def test_a_record_runs_once_and_succeeds_once(records):
    cid = pending(records)
    run = records.start(cid, None, {})
    assert run == 1
    with pytest.raises(NotFound):  # a second start of the same pending record: it is running already
        records.start(cid, None, {})
    rec = records.succeed(cid, run, outcome())
    assert rec is not None and rec.status == "succeeded" and rec.text == "hi"
    assert records.succeed(cid, run, outcome()) is None, "a second final commit must not count"
    assert not records.finish(cid, "failed", GenforgeError("late")), "a succeeded record cannot be failed by a run"


def test_a_stale_workers_late_success_after_its_job_was_requeued_is_refused(records):
    """Worker A takes run 1 and goes quiet; the reaper re-queues the record; worker B takes run 2 and succeeds.
    A's late success and A's late failure must change nothing."""
    cid = pending(records)
    taken = records.take(cid)
    assert taken is not None and taken[1] == 1
    assert records.take(cid) is None, "a running record cannot be taken twice"
    assert records.requeue(cid, 1)
    assert not records.requeue(cid, 1), "re-queued once"
    row, run_b = records.take(cid)  # worker B
    assert run_b == 2 and row.id == cid
    assert records.succeed(cid, 1, outcome()) is None, "worker A's run is over"
    assert not records.finish(cid, "failed", Interrupted("A failed late"), 1)
    assert records.get(cid).status == "running"
    rec = records.succeed(cid, run_b, outcome())
    assert rec is not None and rec.status == "succeeded"


def test_cancel_and_start_race_to_one_winner(records):
    cid = pending(records)
    assert records.cancel_pending(cid, errors.Cancelled("cancelled while waiting in the queue"))
    with pytest.raises(NotFound):
        records.start(cid, None, {})
    assert not records.cancel_pending(cid, errors.Cancelled("again"))
    rec = records.get(cid)
    assert rec.status == "cancelled" and rec.error is not None and rec.error.code == "cancelled"


def test_moves_outside_the_table_are_refused_and_extra_keys_are_declared(records):
    cid = pending(records)
    with pytest.raises(InvalidTransition):
        records._move(cid, "succeeded", ("pending",))  # pending -> succeeded skips running
    with pytest.raises(InvalidTransition):
        checked_extra({"whatever": 1})
    assert checked_extra({"attempts": [], "ttft_ms": 1.0}) == {"attempts": [], "ttft_ms": 1.0}


def test_concurrent_takes_have_one_winner(records):
    cid = pending(records)
    won: list[int] = []

    def take() -> None:
        taken = records.take(cid)
        if taken is not None:
            won.append(taken[1])

    threads = [threading.Thread(target=take) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert won == [1]


def test_the_embedded_queue_is_bounded_and_cancels_what_waits():
    runner = JobRunner(workers=0, queue_size=2)  # no job threads: jobs stay queued
    a = runner.submit("a", lambda job: None)
    b = runner.submit("b", lambda job: None)
    assert runner.position("a") == 1 and runner.position("b") == 2 and runner.depth == 2
    with pytest.raises(errors.QueueFull):
        runner.submit("c", lambda job: None)
    assert runner.cancel("a") is a and a.cancel.is_set()
    assert runner.position("b") == 1 and runner.get("a") is None
    assert runner.cancel("unknown") is None
    queued, left = runner.drain(0)
    assert queued == [b] and left == []
    with pytest.raises(errors.ShuttingDown):
        runner.submit("d", lambda job: None)


def test_an_event_stream_replays_history_and_ends_once():
    stream = EventStream("post-1")
    seen: list[dict] = []
    stream.publish({"type": "token", "text": "a"})
    stream.listen(seen.append)
    stream.finish("done", None)
    assert [e["type"] for e in seen] == ["token", "final"] and stream.done.is_set()
    stream.unlisten(seen.append)
    assert stream.listeners == 0
    job = Job("c1")
    assert job.state == "queued" and job.run is None


def test_the_caller_decides_what_it_may_see_and_run():
    alice = Caller(id="k-alice", name="alice", scope="generate", models=("a",))
    admin = Caller(id="k-ops", name="ops", scope="admin")
    assert alice.owns("k-alice") and not alice.owns("k-bob") and not alice.owns(None)
    assert admin.owns("k-bob") and admin.owns(None) and LOCAL.owns("k-bob")
    assert alice.owner_filter == "k-alice" and admin.owner_filter is None
    alice.check_model("a")
    alice.check_model(None)
    with pytest.raises(Forbidden, match="'b'"):
        alice.check_model("b")
    admin.check_model("anything")
    assert alice.can("read") and not alice.can("admin")
    with pytest.raises(Forbidden):
        alice.check_scope("admin", "DELETE")


def test_every_error_code_has_one_class_and_a_status():
    """The one table: code -> class (errors.py, for errors that crossed a process or were stored) and code ->
    HTTP status (api/errors.py), for every class there is, however deep in the hierarchy."""
    from genforge.api.errors import STATUS

    def subclasses(cls: type[GenforgeError]) -> list[type[GenforgeError]]:
        return [c for sub in cls.__subclasses__() for c in (sub, *subclasses(sub))]

    for cls in subclasses(GenforgeError):
        assert issubclass(cls, error_class(cls.code)), cls  # a subclass keeping its parent's code maps to the parent
        assert cls.code in STATUS, f"{cls.__name__} ({cls.code}) has no HTTP status"
    assert error_class("policy_violation") is errors.PolicyViolation  # not a direct subclass of GenforgeError
    assert error_class("interrupted") is errors.Interrupted and STATUS["interrupted"] == 503
    assert error_class("no-such-code") is GenforgeError
    assert set(BY_CODE) - {"internal_error"} <= set(STATUS)


def _all_codes() -> list[str]:
    return sorted(set(BY_CODE))


@pytest.mark.parametrize("code", _all_codes())
def test_every_code_answers_its_status_in_both_shapes_and_survives_a_process_boundary(code):
    """Raised in a route, each code answers its table status with our error shape, and OpenAI's under /v1; stored
    on a record by another process (the distributed mode), it comes back as its own class."""
    from fastapi import FastAPI
    from fastapi.testclient import TestClient

    from genforge.api.errors import STATUS, install_error_handlers
    from genforge.contenttypes.records import RecordError
    from genforge.distributed.celery_queue import error_of

    cls = error_class(code)
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/api/v1/boom")
    @app.get("/v1/boom")
    def boom() -> None:
        raise cls(f"a {code} error", content_id="c1")

    client = TestClient(app, raise_server_exceptions=False)
    native = client.get("/api/v1/boom")
    assert native.status_code == STATUS.get(code, 500)
    assert native.json()["error"]["code"] == code and native.json()["error"]["content_id"] == "c1"
    openai = client.get("/v1/boom")
    expected = 400 if STATUS.get(code) == 422 else STATUS.get(code, 500)
    assert openai.status_code == expected and openai.json()["error"]["code"] == code

    class Stored:  # a record another process finished with this code
        id, status = "c1", "failed"
        error = RecordError(code=code, message=f"a {code} error", hint=None)

    revived = error_of(Stored())  # type: ignore[arg-type]
    assert type(revived) is cls and revived.code == code and revived.content_id == "c1"
