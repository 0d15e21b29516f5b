"""Failures are reported, never hidden: every fault ends in a typed error and a `failed` record, with no file.

Model faults run against the real engine worker. Engine, validator, storage and database faults use a
scripted runner in place of the engine worker (it proves the service's honesty, not generation).
"""

from __future__ import annotations

import dataclasses
import os
import time

import pytest
from sqlalchemy import event
from sqlalchemy.exc import OperationalError

from conftest import (
    CONTENT,
    DEFAULT_MODEL,
    GENERATE,
    MID_GENERATION_FAILURE,
    ScriptedRunner,
    assert_error,
    count,
    engine_output,
    enospc,
    failed_record,
    fake_gguf,
    files_under,
    long_generation_body,
    make_settings,
    open_catalog,
    runtime_of,
    text_body,
    wait_for,
)
from genforge.contenttypes.text import TextSettings
from genforge.engines.base import Done, Failed, GenerationJob
from genforge.engines.llama import LlamaEngine
from genforge.errors import DatabaseUnavailable
from genforge.stores import artifacts as storage


def artifacts(client) -> list:
    return files_under(runtime_of(client).settings.artifacts_dir)


# --- model faults, real engine worker --------------------------------------------------------------
def test_model_file_deleted_after_registration_is_503_and_failed(live, tmp_path):
    path = fake_gguf(tmp_path / "vanishing.gguf")
    live.runtime.catalog.add(path, name="vanishing")
    path.unlink()

    resp = live.client.post(GENERATE, json={**text_body(), "model": "vanishing"})
    err = assert_error(resp, 503, "model_unavailable")
    assert "missing" in err["message"]
    rec = failed_record(live.client, resp, "model_unavailable")
    assert rec["model"]["name"] == "vanishing"


def test_a_corrupt_gguf_is_a_clear_error_and_never_a_success(live, tmp_path):
    files = files_under(live.settings.artifacts_dir)
    path = fake_gguf(tmp_path / "corrupt.gguf", size=1 << 20)
    live.runtime.catalog.add(path, name="corrupt")

    resp = live.client.post(GENERATE, json={**text_body(), "model": "corrupt"})
    assert resp.status_code in (502, 503), resp.text
    if resp.status_code == 503:  # llama.cpp refused the file
        err = assert_error(resp, 503, "model_unavailable")
        assert str(path) in err["message"] and "could not load" in err["message"]
    else:  # llama.cpp crashed on it: the worker took the hit
        err = assert_error(resp, 502, "engine_failed")
    failed_record(live.client, resp, err["code"])
    assert files_under(live.settings.artifacts_dir) == files

    # the engine worker still serves the default model afterwards
    assert live.generate(prompt="Say hello.", max_tokens=8)["status"] == "succeeded"


# --- engine and validator faults, scripted runner -------------------------------------------------
def test_engine_raising_mid_generation_is_502_and_failed(scripted_app):
    runner = ScriptedRunner(tokens=["Once", " upon", " a"], error=MID_GENERATION_FAILURE)
    client = scripted_app(runner)

    resp = client.post(GENERATE, json=text_body())
    err = assert_error(resp, 502, "engine_failed")
    assert "decode error" in err["message"]
    rec = failed_record(client, resp, "engine_failed")
    assert rec["text"] is None, "tokens emitted before the failure must not become content"
    assert runner.calls == 1
    assert artifacts(client) == []
    assert count(client, status="succeeded") == 0


def test_an_unexpected_exception_in_the_engine_is_a_500_and_failed(scripted_app):
    client = scripted_app(ScriptedRunner(error=MemoryError("out of memory")))
    resp = client.post(GENERATE, json=text_body())
    err = assert_error(resp, 500, "internal_error")
    assert "MemoryError" in err["message"]
    failed_record(client, resp, "internal_error")
    assert artifacts(client) == []


@pytest.mark.parametrize(
    "output",
    [
        engine_output("", completion_tokens=4),
        engine_output("  \n ", completion_tokens=2),
        engine_output("<|im_end|>", completion_tokens=1),
        engine_output("caf\xe9", data=b"caf\xe9"),
    ],
    ids=["empty", "whitespace", "special-token", "not-utf8"],
)
def test_unusable_output_is_502_invalid_output_with_no_artifact(scripted_app, output):
    client = scripted_app(ScriptedRunner(tokens=[], output=output))
    resp = client.post(GENERATE, json=text_body())
    assert_error(resp, 502, "invalid_output")
    failed_record(client, resp, "invalid_output")
    assert artifacts(client) == []
    assert count(client, status="succeeded") == 0


# --- storage and database faults, scripted runner --------------------------------------------------
@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_artifact_write_failing_is_failed_with_no_file(scripted_app, monkeypatch, failing):
    client = scripted_app(ScriptedRunner(tokens=["A", " complete", " answer."]))
    monkeypatch.setattr(storage.os, failing, enospc)

    resp = client.post(GENERATE, json=text_body())
    err = assert_error(resp, 507, "storage_failed")
    assert "No space left" in err["message"]
    monkeypatch.undo()
    failed_record(client, resp, "storage_failed")
    assert artifacts(client) == [], "a failed write left a file under the artifacts dir"


def test_directory_sync_failing_after_the_rename_leaves_no_file(scripted_app, monkeypatch):
    client = scripted_app(ScriptedRunner(tokens=["Renamed", " but", " not", " synced."]))
    real_fsync, calls = os.fsync, []

    def second_fsync_fails(fd):
        calls.append(fd)
        return enospc() if len(calls) == 2 else real_fsync(fd)

    monkeypatch.setattr(storage.os, "fsync", second_fsync_fails)
    resp = client.post(GENERATE, json=text_body())
    monkeypatch.undo()
    assert_error(resp, 507, "storage_failed")
    failed_record(client, resp, "storage_failed")
    assert artifacts(client) == [], f"a failed write left {artifacts(client)}"


@pytest.fixture
def commit_of_success_fails():
    """Make the database refuse the final commit of any record turning `succeeded` (disk full): every statement
    that writes `succeeded` into the content table fails, whichever way the record store writes it."""
    attached = []

    def attach(client):
        engine = runtime_of(client).db.engine

        def refuse(_conn, _cursor, statement, parameters, _context, _executemany):
            values = parameters.values() if isinstance(parameters, dict) else parameters or ()
            if statement.lstrip().upper().startswith("UPDATE CONTENT") and "succeeded" in list(values):
                raise OperationalError(statement, parameters, Exception("database or disk is full"))

        event.listen(engine, "before_cursor_execute", refuse)
        attached.append((engine, refuse))

    yield attach
    for engine, refuse in attached:
        event.remove(engine, "before_cursor_execute", refuse)


def test_db_commit_failing_leaves_no_orphan_file(scripted_app, commit_of_success_fails):
    client = scripted_app(ScriptedRunner(tokens=["Stored", " then", " not", " committed."]))
    commit_of_success_fails(client)

    resp = client.post(GENERATE, json=text_body())
    assert resp.status_code >= 500, resp.text
    err = resp.json()["error"]
    assert "database or disk is full" in err["message"]
    failed_record(client, resp, err["code"])
    assert artifacts(client) == [], "the artifact of a record that never committed was left behind"


def test_db_commit_failing_keeps_a_file_another_record_owns(scripted_app, commit_of_success_fails):
    client = scripted_app(ScriptedRunner(tokens=["Shared", " words."]))
    owner = client.post(GENERATE, json=text_body()).json()
    assert owner["status"] == "succeeded"
    commit_of_success_fails(client)

    resp = client.post(GENERATE, json=text_body())  # same text, same content-addressed file
    assert resp.status_code >= 500
    assert len(artifacts(client)) == 1
    assert client.get(owner["artifact"]["url"]).content == b"Shared words."
    assert client.get(f"{CONTENT}/{owner['id']}").json()["status"] == "succeeded"


def test_the_running_commit_failing_stops_the_engine_and_fails_the_record(app_with, monkeypatch):
    """The `running` commit overlaps the engine's first step (worker.EngineWorker.generate's `started`): when it
    fails, the job already in the engine is cancelled there, and the record ends failed with the database's error."""
    client = app_with()
    runtime = runtime_of(client)
    wait_for(lambda: runtime.preloaded, what="the default model to preload")
    db, transaction, calls = runtime.db, runtime.db.transaction, []

    def second_fails():  # the first transaction of a request is its accept insert, the second its `running`
        calls.append(1)
        if len(calls) == 2:
            raise DatabaseUnavailable("the database cannot be used right now: disk I/O error")
        return transaction()

    monkeypatch.setattr(db, "transaction", second_fails)
    started = time.monotonic()
    resp = client.post(GENERATE, json=long_generation_body())  # runs for many seconds unless stopped
    assert_error(resp, 503, "database_unavailable")
    assert time.monotonic() - started < 10, "the engine went on with a job whose record could not be written"
    failed_record(client, resp, "database_unavailable")
    assert runtime.service.engines.worker("text")._jobs == {}, "the cancelled job is still waited for"
    assert artifacts(client) == []
    monkeypatch.undo()
    again = client.post(GENERATE, json=text_body("Say hello.", max_tokens=8))
    assert again.status_code == 201 and again.json()["status"] == "succeeded", again.text


# --- timeout, real engine worker -------------------------------------------------------------------
def test_a_generation_past_the_timeout_is_504_and_the_worker_recovers(app_with):
    client = app_with(generation_timeout_s=1.5)
    runtime = runtime_of(client)
    wait_for(lambda: runtime.preloaded, what="the default model to preload")
    resp = client.post(GENERATE, json=long_generation_body())
    err = assert_error(resp, 504, "generation_timeout")
    failed_record(client, resp, "generation_timeout")
    assert artifacts(client) == []

    runtime.settings.generation_timeout_s = 300  # the app's own settings object: no timeout for the retry
    again = client.post(GENERATE, json=text_body("Say hello.", max_tokens=8))
    assert again.status_code == 201, again.text
    assert err["content_id"] != again.json()["id"]


def _text_job(content_id: str, model, max_tokens: int = 8) -> GenerationJob:
    return GenerationJob(
        content_id,
        "text",
        model,
        "Name a colour.",
        None,
        TextSettings(max_tokens=max_tokens, temperature=0, top_p=1, seed=1),
    )


def _run(engine: LlamaEngine) -> dict[str, object]:
    """Step the engine until nothing is left: each job's last event (Done or Failed)."""
    ends = {}
    while engine.busy:
        for ev in engine.step():
            if isinstance(ev, Done | Failed):
                ends[ev.job_id] = ev
    return ends


@pytest.mark.timeout(120)  # before the fix such a job was retried forever
def test_a_job_that_cannot_start_fails_alone_and_the_engine_goes_on(tmp_path, monkeypatch):
    """Any exception while a job is admitted (loading its model, reading its prompt) fails that job with a
    typed error; it never stays queued forever, and the sequences beside it finish."""
    model = open_catalog(make_settings(tmp_path)).resolve(DEFAULT_MODEL)
    engine = LlamaEngine(n_threads=2, n_ctx=512, n_parallel=2)
    engine.submit(_text_job("unloadable", dataclasses.replace(model, path=None)))  # TypeError inside llama-cpp
    engine.submit(_text_job("fine-1", model))
    ends = _run(engine)
    assert isinstance(ends["unloadable"], Failed) and ends["unloadable"].error.code == "engine_failed"
    assert "TypeError" in ends["unloadable"].error.message
    assert isinstance(ends["fine-1"], Done) and ends["fine-1"].output.text

    engine.submit(_text_job("running", model, max_tokens=24))
    engine.step()  # "running" is generating
    real = engine._prompt_tokens

    def prompt_tokens(job):
        if job.content_id == "broken":
            raise RuntimeError("bad")
        return real(job)

    monkeypatch.setattr(engine, "_prompt_tokens", prompt_tokens)
    engine.submit(_text_job("broken", model))
    ends = _run(engine)
    assert isinstance(ends["broken"], Failed) and "RuntimeError: bad" in ends["broken"].error.message
    assert isinstance(ends["running"], Done) and ends["running"].output.usage["completion_tokens"] > 1
