"""Faults against a real `genforge serve`: the database locked by another process, a delete racing a running
job that shares its file, SIGTERM with jobs queued and running, a second server on the data dir, artifacts
changed or lost behind genforge's back. Each ends with every accepted job succeeded with a valid artifact, or
failed/cancelled/interrupted with its code, and a server that serves the next request."""

from __future__ import annotations

import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest

from conftest import (
    CONTENT,
    GENERATE,
    GENFORGE,
    Server,
    assert_error,
    cli_env,
    long_generation_body,
    text_body,
    wait_for,
)

pytestmark = pytest.mark.slow
FINAL = {"succeeded", "failed", "cancelled"}


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("faults") / "data", env={"GENFORGE_ENGINE_LOG_LEVEL": "WARNING"}).start()
    try:
        srv.wait_ready()
        yield srv
    finally:
        srv.stop()


class DatabaseLock:
    """Another process holds the SQLite database's write lock for `seconds` (BEGIN EXCLUSIVE; readers go on in
    WAL mode, writers wait for the busy timeout and then fail)."""

    CODE = (
        "import sqlite3, sys, time\n"
        "c = sqlite3.connect(sys.argv[1], isolation_level=None)\n"
        "c.execute('BEGIN EXCLUSIVE')\n"
        "print('locked', flush=True)\n"
        "time.sleep(float(sys.argv[2]))\n"
        "c.execute('ROLLBACK')\n"
    )

    def __init__(self, server: Server, seconds: float):
        self.proc = subprocess.Popen(
            [sys.executable, "-c", self.CODE, str(server.data_dir / "genforge.db"), str(seconds)],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdout.readline().strip() == "locked"

    def wait(self) -> None:
        assert self.proc.wait(timeout=120) == 0


def record(server: Server, content_id: str) -> dict:
    resp = server.http.get(f"{CONTENT}/{content_id}")
    assert resp.status_code == 200, resp.text
    return resp.json()


def settle(server: Server, ids: list[str], timeout: float = 240) -> list[dict]:
    """Every record final (none left pending or running), within `timeout`."""
    wait_for(lambda: all(record(server, i)["status"] in FINAL for i in ids), timeout, 0.5, "the jobs to end")
    return [record(server, i) for i in ids]


def assert_honest(server: Server, rec: dict) -> None:
    """succeeded means its file is served with its sha256; anything else has its error code."""
    if rec["status"] == "succeeded":
        resp = server.http.get(f"{CONTENT}/{rec['id']}/file")
        assert resp.status_code == 200, resp.text
        assert hashlib.sha256(resp.content).hexdigest() == rec["artifact"]["sha256"]
    else:
        assert rec["error"]["code"] and rec["artifact"] is None, rec


def test_jobs_outlive_a_database_locked_past_the_busy_timeout(server):
    """Records never stay pending/running after the database was locked (fault 2), the lock is a typed 503
    with Retry-After (fault 4), /readyz says so, and /healthz answers throughout (fault 3)."""
    ids = []
    for seed in range(4):
        resp = server.http.post(GENERATE, json={**text_body(max_tokens=24, seed=seed), "mode": "async"})
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])
    lock = DatabaseLock(server, 9)
    started = time.monotonic()
    with ThreadPoolExecutor(24) as pool:  # many submits waiting on the database at once
        submits = [
            pool.submit(server.http.post, GENERATE, json={**text_body(max_tokens=4), "mode": "async"})
            for _ in range(24)
        ]
        time.sleep(1)
        health = httpx.get(f"{server.http.base_url}/healthz", timeout=3)
        assert health.status_code == 200  # the event loop answers while the thread pool waits on the database
        ready = server.http.get("/readyz", timeout=10)
        assert ready.status_code == 503 and not ready.json()["checks"]["database"]["ok"], ready.text
        answers = [f.result(timeout=120) for f in submits]
    lock.wait()
    refused = [r for r in answers if r.status_code == 503]
    assert refused, "no submit waited past the busy timeout"
    for resp in refused:
        assert_error(resp, 503, "database_unavailable")
        assert resp.headers["retry-after"]
    ids += [r.json()["id"] for r in answers if r.status_code == 202]
    for rec in settle(server, ids):
        assert_honest(server, rec)
    assert time.monotonic() - started < 200
    assert server.http.get("/readyz").status_code == 200
    resp = server.http.post(GENERATE, json=text_body(max_tokens=4))
    assert resp.status_code == 201, resp.text


@pytest.mark.parametrize("attempt", range(3))
def test_deleting_a_record_never_takes_the_file_of_a_running_one(server, attempt):
    """Fault 1: A and B make the same text (one shared file); B runs while the database is locked for 2 s and A
    is deleted in that window. B must end succeeded *with* its file."""
    body = text_body("Describe the sea in one sentence.", max_tokens=64, seed=77, temperature=0.0)
    a = server.http.post(GENERATE, json=body)
    assert a.status_code == 201, a.text
    b = server.http.post(GENERATE, json={**body, "mode": "async"}).json()
    wait_for(lambda: record(server, b["id"])["status"] != "pending", 60, 0.01, "B to start")
    lock = DatabaseLock(server, 2)
    deleted = server.http.delete(f"{CONTENT}/{a.json()['id']}")
    lock.wait()
    assert deleted.status_code == 204, deleted.text
    (final,) = settle(server, [b["id"]])
    assert final["status"] == "succeeded", final
    assert final["artifact"]["sha256"] == a.json()["artifact"]["sha256"]
    assert_honest(server, final)


def test_a_changed_or_lost_artifact_is_a_typed_error_never_the_bytes(server):
    """Fault 7: a file changed behind genforge's back is not served; a lost one names its record."""
    rec = server.http.post(GENERATE, json=text_body("Name a mountain.", max_tokens=8, seed=5)).json()
    path = next((server.data_dir / "artifacts").rglob(rec["artifact"]["sha256"] + ".txt"))
    original = path.read_bytes()
    try:
        path.write_bytes(original + b" (edited)")
        err = assert_error(server.http.get(f"{CONTENT}/{rec['id']}/file"), 409, "artifact_changed")
        assert err["content_id"] == rec["id"]
        path.unlink()
        err = assert_error(server.http.get(f"{CONTENT}/{rec['id']}/file"), 404, "artifact_lost")
        assert err["content_id"] == rec["id"]
    finally:
        path.write_bytes(original)
    assert server.http.get(f"{CONTENT}/{rec['id']}/file").content == original


def test_async_with_stream_is_refused(server):
    """Fault 10: one way to answer; an async request cannot also stream."""
    resp = server.http.post(GENERATE, json={**text_body(), "mode": "async", "stream": True})
    err = assert_error(resp, 422, "invalid_request")
    assert err["field"] == "stream" and "events" in err["message"]


def test_a_second_server_on_the_same_data_dir_refuses_to_start(server):
    """Fault 6: it would take the first one's live jobs for a crash's leftovers."""
    run = subprocess.run(
        [str(GENFORGE), "serve", "--port", "1"],
        env=cli_env(server.data_dir),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert "already_running" in run.stderr and "another genforge server" in run.stderr
    assert server.http.get("/readyz").status_code == 200


def test_sigterm_drains_and_leaves_no_job_unfinished(tmp_path):
    """Fault 5: SIGTERM stops taking work, lets running jobs go on for the drain timeout, records what is left
    `interrupted`, and exits 0. Nothing stays pending or running."""
    srv = Server(tmp_path / "data", env={"GENFORGE_DRAIN_TIMEOUT_S": "2", "GENFORGE_PARALLEL": "2"})
    srv.start(new_session=True)
    srv.wait_ready()
    ids = []
    for _ in range(6):
        resp = srv.http.post(GENERATE, json={**long_generation_body(), "mode": "async"})
        assert resp.status_code == 202, resp.text
        ids.append(resp.json()["id"])
    wait_for(lambda: record(srv, ids[0])["status"] == "running", 60, 0.1, "a job to run")
    srv.proc.send_signal(signal.SIGTERM)
    assert srv.proc.wait(timeout=90) == 0, srv.log()
    srv.http.close()
    db = sqlite3.connect(tmp_path / "data" / "genforge.db")
    rows = dict(
        db.execute(
            f"SELECT id, status || ':' || COALESCE(error_code, '') FROM content WHERE id IN "
            f"({','.join('?' * len(ids))})",
            ids,
        ).fetchall()
    )
    db.close()
    assert set(rows) == set(ids)
    assert all(v in ("failed:interrupted", "succeeded:") for v in rows.values()), rows
    assert list(rows.values()).count("failed:interrupted") >= 4, rows  # the long ones could not finish in 2 s


def can_mount_tmpfs() -> bool:
    return os.geteuid() == 0 and shutil.which("mount") is not None


@pytest.mark.skipif(not can_mount_tmpfs(), reason="mounting a small tmpfs needs root")
def test_a_full_disk_fails_writes_honestly_and_recovers_when_freed(tmp_path):
    """The data dir's filesystem fills up while jobs run: artifacts fail as storage_failed (507) or the database
    as database_unavailable; nothing is recorded as succeeded without its file; once space is freed, every
    record ends and the next request succeeds."""
    mount = tmp_path / "small"
    mount.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=24m", "tmpfs", str(mount)], check=True)
    srv = Server(mount / "data", env={"GENFORGE_ENGINE_LOG_LEVEL": "WARNING"})
    try:
        srv.start()
        srv.wait_ready()
        filler = mount / "filler"
        subprocess.run(["dd", "if=/dev/zero", f"of={filler}", "bs=64k"], capture_output=True)  # until full
        answers = [
            srv.http.post(GENERATE, json=text_body(f"Name a fish, take {i}.", max_tokens=24, seed=i)) for i in range(3)
        ]
        for resp in answers:
            assert resp.status_code in (201, 503, 507), resp.text
            if resp.status_code != 201:
                assert resp.json()["error"]["code"] in ("storage_failed", "database_unavailable"), resp.text
        assert any(r.status_code != 201 for r in answers), "the full disk did not fail any write"
        filler.unlink()
        ids = [r.json().get("id") or r.json()["error"].get("content_id") for r in answers]
        for rec in settle(srv, [i for i in ids if i]):
            assert_honest(srv, rec)
        resp = srv.http.post(GENERATE, json=text_body(max_tokens=4))
        assert resp.status_code == 201, resp.text
    finally:
        srv.stop()
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_burst_of_200_against_a_queue_of_32_sheds_with_429_and_every_accepted_job_ends(tmp_path):
    srv = Server(tmp_path / "data", env={"GENFORGE_QUEUE_SIZE": "32", "GENFORGE_ENGINE_LOG_LEVEL": "WARNING"})
    try:
        srv.start()
        srv.wait_ready()
        rss_before = rss_mb(srv.proc.pid)
        body = {**text_body("Say hi.", max_tokens=4), "mode": "async"}
        with ThreadPoolExecutor(32) as pool:
            answers = list(pool.map(lambda _: srv.http.post(GENERATE, json=body), range(200)))
        statuses = sorted({r.status_code for r in answers})
        assert statuses == [202, 429], statuses  # no 5xx
        assert all(r.headers.get("retry-after") for r in answers if r.status_code == 429)
        accepted = [r.json()["id"] for r in answers if r.status_code == 202]
        assert len(accepted) >= 32
        for rec in settle(srv, accepted, timeout=600):
            assert_honest(srv, rec)
        assert rss_mb(srv.proc.pid) < rss_before + 100, "the server's memory grew by more than 100 MB"
    finally:
        srv.stop()


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("VmRSS:")) / 1024
