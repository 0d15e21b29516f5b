"""Issue 27, serving: what /readyz tells whom and what it costs, what the log holds of the users' text, a thread
pool that slow generations cannot starve, and SSE streams whose clients leave nothing behind.

Real code paths throughout: the app with its lifespan (TestClient), a real uvicorn server in a thread where a
client must really disconnect, the celery runner against a broker port nobody listens on. The engine is a
scripted stand-in where the test is about the server around it (its speed, its events), not about the model.
"""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import httpx
import pytest
import uvicorn

from conftest import (
    CONTENT,
    GENERATE,
    MID_GENERATION_FAILURE,
    ScriptedRunner,
    assert_error,
    engine_output,
    free_port,
    make_settings,
    running_app,
    runtime_of,
    text_body,
    wait_for,
)
from genforge.api import create_app
from genforge.config import Settings
from genforge.stores.db import Database

pytestmark = pytest.mark.only_in("embedded", reason="a scripted engine stands in for this process's engines")


def bearer(token: str) -> dict:
    return {"Authorization": f"Bearer {token}"}


# --- finding 3: /readyz shows statuses to anyone, details to a key; the broker is asked at most once a moment ----
def test_anonymous_readyz_shows_statuses_only_once_keys_exist(tmp_path):
    with running_app(make_settings(tmp_path / "data", preload=False)) as client:
        open_body = client.get("/readyz").json()  # auth off: every route is open, the details too
        assert open_body["checks"]["database"]["detail"], open_body
        _, token = client.app.state.auth.keys.create("probe", "read")

        anonymous = client.get("/readyz")
        body = anonymous.json()
        assert set(body) == {"ready", "checks"}, body
        assert set(body["checks"]) == set(open_body["checks"])
        assert all(check == {"ok": check["ok"]} for check in body["checks"].values()), body
        assert "pid" not in anonymous.text and "schema" not in anonymous.text

        keyed = client.get("/readyz", headers=bearer(token)).json()
        assert keyed["checks"]["database"]["detail"].startswith("schema"), keyed
        assert "pid" in keyed["checks"]["engine_worker"]
        assert client.get("/readyz", headers=bearer("gf_000000000000_not-a-key")).status_code == 401


def test_readyz_with_the_database_down_answers_statuses_not_an_error(tmp_path):
    from scale_fixtures import Postgres, _pg_bin

    if _pg_bin() is None:
        pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
    cluster = Postgres().start()  # a cluster of its own: this test stops it
    try:
        settings = make_settings(tmp_path / "data", preload=False, database_url=cluster.new_database())
        with running_app(settings) as client:
            _, token = client.app.state.auth.keys.create("probe", "read")
            assert client.get("/readyz", headers=bearer(token)).status_code == 200
            cluster.stop()  # the key can no longer be looked up
            for headers in ({}, bearer(token)):
                resp = client.get("/readyz", headers=headers)
                assert resp.status_code == 503, resp.text
                body = resp.json()
                assert body["ready"] is False and body["checks"]["database"] == {"ok": False}, body
    finally:
        if cluster.proc.poll() is None:  # the test failed before it stopped the cluster
            cluster.stop()


def test_celery_readiness_hides_the_broker_password_and_asks_the_broker_once_a_moment(tmp_path, caplog):
    pytest.importorskip("celery", reason="celery is not installed (pip install 'genforge[distributed]')")
    from genforge.distributed.celery_queue import CHECK_TTL_S, CeleryJobRunner

    dead_port = free_port()  # nothing listens there: the broker is down
    settings = Settings(
        data_dir=tmp_path / "data",
        queue="celery",
        broker_url=f"redis://:S3cretPw0rd@127.0.0.1:{dead_port}/0",
        database_url=f"sqlite:///{tmp_path / 'genforge.db'}",
        artifact_dir=tmp_path / "artifacts",
    )
    db = Database(settings.db_url)
    db.migrate()
    caplog.set_level(logging.INFO)
    runner = CeleryJobRunner(settings, db)
    try:
        pings = []
        real_ping = runner.redis.ping
        runner.redis.ping = lambda: (pings.append(1), real_ping())[1]
        with ThreadPoolExecutor(50) as pool:  # 50 probes at once
            answers = list(pool.map(lambda _: runner.check(), range(50)))
        ok, detail = answers[0]
        assert not ok and all(a == answers[0] for a in answers)
        assert "S3cretPw0rd" not in detail and f"redis://:***@127.0.0.1:{dead_port}/0 unreachable" in detail, detail
        assert len(pings) == 1, f"{len(pings)} broker pings for 50 probes at once"
        time.sleep(CHECK_TTL_S + 0.2)
        runner.check()
        assert len(pings) == 2, "the answer is reused for a moment only"
    finally:
        runner.close()
        db.dispose()
    assert "S3cretPw0rd" not in caplog.text


# --- finding 4: the default log carries ids and codes, not the users' text --------------------------------------
def test_a_failure_is_logged_by_its_code_and_its_message_only_at_debug(scripted_app, caplog):
    marker = "Quokka-Secret-Phrase-5511"
    defaults = Settings()  # the levels `genforge serve` sets up (runtime.setup_logging)
    caplog.set_level(defaults.log_level)
    caplog.set_level(defaults.engine_log_level, logger="genforge.engine.output")
    client = scripted_app(ScriptedRunner(tokens=("Say ", marker)))
    persona = client.post("/api/v1/personas", json={"name": "careful", "text": {"forbidden_phrases": [marker]}})
    assert persona.status_code == 201, persona.text
    resp = client.post(GENERATE, json={**text_body(f"Write about {marker}."), "persona": "careful"})
    assert resp.status_code == 502 and resp.json()["error"]["code"] == "policy_violation", resp.text
    assert marker in resp.json()["error"]["message"], "the client is told which phrase"
    content_id = resp.json()["error"]["content_id"]
    failed = [r.getMessage() for r in caplog.records if content_id in r.getMessage() and "failed" in r.getMessage()]
    assert failed == [f"content={content_id} failed code=policy_violation"], failed
    assert marker not in caplog.text, "the failure's message (which quotes the text) reached the default log"


# --- finding 9: slow synchronous generations do not starve the thread pool ---------------------------------------
class SlowRunner(ScriptedRunner):
    """An engine that takes `seconds` per job (a slow model), emitting a token first."""

    def __init__(self, seconds: float):
        super().__init__(tokens=("slow",))
        self.seconds = seconds

    def generate(self, job, emit=None, cancel=None, started=None):
        if started is not None:
            started()
        if emit is not None:
            emit({"type": "token", "text": "slow"})
        time.sleep(self.seconds)
        return engine_output("slow answer", completion_tokens=2)


@pytest.mark.parametrize(("requests", "variants"), [(100, None), (50, 2)], ids=["single", "variants"])
def test_a_hundred_slow_sync_generations_leave_reads_key_checks_and_readyz_answering(tmp_path, requests, variants):
    settings = make_settings(tmp_path / "data", preload=False, queue_size=128)
    with running_app(settings) as client:
        runtime = runtime_of(client)
        runtime.service.engines = SlowRunner(0.25)  # 100 jobs, 4 at a time: about 6 s of generation
        _, token = client.app.state.auth.keys.create("busy", "generate")  # every request now has a key check
        auth = bearer(token)

        with ThreadPoolExecutor(100) as pool:
            bodies = [{**text_body(f"Request {i}."), "variants": variants} for i in range(requests)]
            answers = [pool.submit(client.post, GENERATE, json=body, headers=auth) for body in bodies]
            wait_for(lambda: runtime.runner.depth >= 30, 30, 0.05, "the generations to be queued")
            slowest = {}
            for path, headers in ((CONTENT, auth), ("/api/v1/models", auth), ("/readyz", {})):
                for _ in range(3):
                    start = time.perf_counter()
                    resp = client.get(path, headers=headers)
                    took = time.perf_counter() - start
                    assert resp.status_code in (200, 503), (path, resp.text)
                    slowest[path] = max(slowest.get(path, 0.0), took)
            still_queued = runtime.runner.depth
            results = [a.result(timeout=120) for a in answers]
        assert still_queued > 0, "the generations ended before the checks: the test proved nothing"
        assert all(r.status_code == 201 for r in results), [r.text for r in results if r.status_code != 201][:2]
        assert max(slowest.values()) < 1.0, f"answer times while 100 sync generations ran: {slowest}"


def test_a_failed_variant_still_answers_its_error_with_the_batch_id(scripted_app):
    client = scripted_app(ScriptedRunner(error=MID_GENERATION_FAILURE))  # the variants are awaited on the loop
    resp = client.post(GENERATE, json={**text_body("Fail twice."), "variants": 2})
    assert_error(resp, 502, "engine_failed")
    batch = client.get(f"/api/v1/batches/{resp.json()['error']['batch_id']}").json()
    assert [item["status"] for item in batch["items"]] == ["failed", "failed"], batch


# --- finding 10: a client that leaves an SSE stream takes its listener with it ------------------------------------
class HeldRunner(ScriptedRunner):
    """Emits one token, then holds the job until `release` is set (a long generation)."""

    def __init__(self):
        super().__init__(tokens=("first",))
        self.release = threading.Event()

    def generate(self, job, emit=None, cancel=None, started=None):
        if started is not None:
            started()
        if emit is not None:
            emit({"type": "token", "text": "first"})
        self.release.wait(120)
        return engine_output("first", completion_tokens=1)


@contextmanager
def uvicorn_in_thread(settings: Settings) -> Iterator[tuple[uvicorn.Server, object]]:
    """`genforge serve`'s app behind a real uvicorn (real sockets, real disconnects) in this process, so the test
    can look at the jobs' listeners."""
    app = create_app(settings)
    config = uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning", log_config=None)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, name="test-uvicorn", daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, 60, 0.05, "uvicorn to start")
        yield server, app
    finally:
        server.should_exit = True
        thread.join(60)


def connect_and_drop(port: int, path: str) -> None:
    """Open the stream, read until its first event arrived, and hang up."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n\r\n".encode())
        got = b""
        while b"event: token" not in got:
            chunk = sock.recv(65536)
            assert chunk, f"the stream closed before its first event: {got!r}"
            got += chunk


def test_a_thousand_dropped_sse_clients_leave_no_listener(tmp_path):
    runner = HeldRunner()
    with uvicorn_in_thread(make_settings(tmp_path / "data", preload=False)) as (server, app):
        app.state.runtime.service.engines = runner
        port = server.config.port
        with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            accepted = http.post(GENERATE, json={**text_body("Hold on."), "mode": "async"})
            assert accepted.status_code == 202, accepted.text
            content_id = accepted.json()["id"]
            job = wait_for(lambda: app.state.runtime.runner.get(content_id), 10, 0.05, "the job")
            wait_for(lambda: job.history, 10, 0.05, "the job's first event")
            connections_before = len(server.server_state.connections)

            for _ in range(1000):
                connect_and_drop(port, f"{CONTENT}/{content_id}/events")

            def settled() -> bool:
                return not job._listeners and len(server.server_state.connections) <= connections_before

            try:
                wait_for(settled, 15, 0.1, "the dropped streams to be cleaned up")
            except AssertionError:
                pytest.fail(
                    f"{len(job._listeners)} listeners and {len(server.server_state.connections)} connections are left "
                    "on the job after 1,000 clients came and went"
                )
            assert len(job.history) == 1, "the dropped clients changed the job's events"
            runner.release.set()
            done = wait_for(
                lambda: (r := http.get(f"{CONTENT}/{content_id}").json())["status"] == "succeeded" and r, 30
            )
            assert done["text"] == "first"
