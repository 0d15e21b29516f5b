"""Issue 27, a real `genforge serve` process and its log file: at the default log level the log carries ids,
counts and timings, never a prompt or a generated text; in the celery mode with its broker down, neither
/readyz, the log nor `genforge doctor` shows the broker's or the database's password."""

from __future__ import annotations

import httpx
import pytest

from conftest import GENERATE, Server, free_port, run_cli, wait_for
from scale_fixtures import pg_url, postgres  # noqa: F401 (fixtures)

BROKER_PASSWORD = "S3cretPw0rd"
DB_PASSWORD = "DbPassw0rd"


def test_the_default_log_names_a_generation_without_its_text(tmp_path):
    marker = "Zanzibar-quokka-7731"
    srv = Server(tmp_path / "data").start()  # the default levels: no GENFORGE_* variable is passed on
    try:
        srv.wait_ready()
        body = {
            "content_type": "text",
            "prompt": f"Write a long story about a keeper named {marker}.",
            "params": {"max_tokens": 48, "seed": 5, "temperature": 2.0, "top_p": 1.0},
        }
        resp = srv.http.post(GENERATE, json=body)
        assert resp.status_code == 201, resp.text
        rec = resp.json()
    finally:
        srv.stop()
    log = srv.log_path.read_text(errors="replace")
    assert rec["usage"]["completion_tokens"] >= 30, "the generation must be long enough to judge the log"
    naming = [line for line in log.splitlines() if rec["id"] in line]
    assert len(naming) < 8, f"{len(naming)} log lines for one generation:\n" + "\n".join(naming[:12])
    assert marker not in log, "the prompt is in the log"
    words = {w.strip(".,;:!?\"'") for w in rec["text"].split()} - {""}
    quoted = [line for line in naming if any(w in line.split(rec["id"], 1)[1] for w in words if len(w) > 3)]
    assert rec["text"].strip() not in log and not quoted, "the generated text is in the log:\n" + "\n".join(quoted)


def test_a_celery_server_with_its_broker_down_never_shows_a_password(tmp_path, pg_url):  # noqa: F811
    pytest.importorskip("celery", reason="celery is not installed (pip install 'genforge[distributed]')")
    user, rest = pg_url.split("://", 1)[1].split("@", 1)
    database_url = f"postgresql+psycopg://{user}:{DB_PASSWORD}@{rest}"  # trust authentication ignores it
    broker_url = f"redis://:{BROKER_PASSWORD}@127.0.0.1:{free_port()}/0"  # nothing listens there
    env = {
        "GENFORGE_QUEUE": "celery",
        "GENFORGE_DATABASE_URL": database_url,
        "GENFORGE_BROKER_URL": broker_url,
        "GENFORGE_ARTIFACT_DIR": str(tmp_path / "shared-artifacts"),
    }
    srv = Server(tmp_path / "api", env=env).start()
    try:
        wait_for(lambda: _answers(srv), 90, 0.3, "the API process to answer")
        ready = srv.http.get("/readyz", timeout=30)
        assert ready.status_code == 503, ready.text
        workers = ready.json()["checks"]["workers"]
        assert workers["ok"] is False and "redis://:***@127.0.0.1" in workers["detail"], workers
        for _ in range(3):  # the relay's reconnects write to the log meanwhile
            body = srv.http.get("/readyz", timeout=30).text
            assert BROKER_PASSWORD not in body and DB_PASSWORD not in body, body
    finally:
        srv.stop()
    log = srv.log_path.read_text(errors="replace")
    assert "unreachable" in log or "cannot subscribe" in log, "the test must see the broker's failure logged"
    assert BROKER_PASSWORD not in log and DB_PASSWORD not in log, log[-2000:]

    doctor = run_cli(tmp_path / "api", "doctor", env=env, timeout=300)
    said = doctor.stdout + doctor.stderr
    assert "redis://:***@127.0.0.1" in said, said[-2000:]
    assert BROKER_PASSWORD not in said and DB_PASSWORD not in said, said[-2000:]


def _answers(srv: Server) -> bool:
    assert srv.proc.poll() is None, f"the server exited:\n{srv.log()}"
    try:
        return srv.http.get("/healthz", timeout=5).status_code == 200
    except httpx.TransportError:  # not listening yet
        return False
