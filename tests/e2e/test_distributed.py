"""The celery mode end to end, all real: PostgreSQL, Redis, a `genforge serve` API process that loads no model,
and two `genforge worker` processes sharing an artifact directory. Same client view as the embedded mode: 202
and Location, queue positions, cancel of pending and running jobs, SSE tokens relayed through Redis, the same
records; a worker killed with SIGKILL mid-job costs the job one more run elsewhere or an `interrupted` record,
never a false success or an orphan file."""

from __future__ import annotations

import signal
import socket
import subprocess
import time
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import (
    CONTENT,
    GENERATE,
    Server,
    assert_error,
    assert_succeeded_text,
    files_under,
    free_port,
    long_generation_body,
    run_cli,
    sha256,
    text_body,
    wait_for,
)
from genforge.stores.artifacts import LOCK_NAME
from scale_fixtures import Worker, pg_url, postgres, redis_server  # noqa: F401 (fixtures)

pytestmark = pytest.mark.slow


class Cluster:
    def __init__(self, tmp: Path, database_url: str, broker: str):
        self.shared = tmp / "shared-artifacts"
        self.env = {
            "GENFORGE_DATABASE_URL": database_url,
            "GENFORGE_QUEUE": "celery",
            "GENFORGE_BROKER_URL": broker,
            "GENFORGE_ARTIFACT_DIR": str(self.shared),
            "GENFORGE_THREADS": "1",
            "GENFORGE_WORKER_LEASE_S": "6",
        }
        self.api = Server(tmp / "api", env=self.env)
        self.tmp = tmp
        self.workers: list[Worker] = []

    def start_worker(self, types: str = "text") -> Worker:
        """A worker that serves its generation metrics on a port of its own (`worker.metrics_url`)."""
        port = free_port()
        env = {**self.env, "GENFORGE_WORKER_METRICS_PORT": str(port)}
        worker = Worker(self.tmp / f"worker{len(self.workers)}", env, types=types, concurrency=1).start()
        worker.metrics_url = f"http://127.0.0.1:{port}/"
        self.workers.append(worker)
        return worker

    def worker_counts(self, metric: str, **labels: str) -> float:
        """A counter's value summed over the workers' own /metrics (the jobs are counted where they ran)."""
        total = 0.0
        for worker in self.workers:
            for family in text_string_to_metric_families(httpx.get(worker.metrics_url, timeout=10).text):
                total += sum(s.value for s in family.samples if s.name == metric and labels.items() <= s.labels.items())
        return total

    @property
    def http(self) -> httpx.Client:
        return self.api.http

    def ready(self) -> dict | None:
        try:
            resp = self.http.get("/readyz", timeout=10)
        except httpx.TransportError:
            return None
        return resp.json() if resp.status_code == 200 else None

    def record(self, content_id: str) -> dict:
        return self.http.get(f"{CONTENT}/{content_id}").json()

    def stop(self) -> None:
        for worker in self.workers:
            worker.kill(signal.SIGTERM)
        for worker in self.workers:
            worker.stop()
        self.api.stop()


@pytest.fixture
def cluster(tmp_path, pg_url, redis_server):  # noqa: F811
    c = Cluster(tmp_path, pg_url, redis_server.url(0))
    c.api.start()
    c.start_worker()
    c.start_worker()
    try:
        wait_for(lambda: _serving(c.ready()) >= 2, 120, 0.5, f"two workers to serve\n{tmp_path}")
        yield c
    finally:
        c.stop()
        redis_server_flush(redis_server)


def _serving(ready: dict | None) -> int:
    """How many workers a ready /readyz names (its answer is reused for 1.5 s: `ready` alone may be one worker)."""
    if not ready or not ready.get("ready"):
        return 0
    return len(ready["checks"]["workers"]["detail"].split("; "))


def redis_server_flush(server) -> None:
    subprocess.run(["redis-cli", "-p", str(server.port), "flushall"], capture_output=True)


def loaded_models(pid: int) -> bool:
    """Whether the process or any child of it maps a GGUF file."""
    pids = [pid] + [
        int(p) for p in subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout.split()
    ]
    return any(".gguf" in Path(f"/proc/{p}/maps").read_text() for p in pids if Path(f"/proc/{p}/maps").exists())


def test_the_client_view_is_the_embedded_one(cluster, postgres):  # noqa: F811
    http = cluster.http
    workers = cluster.ready()["checks"]["workers"]["detail"]
    assert workers.count(": text") == 2, workers

    rec = http.post(GENERATE, json=text_body("Name a river.", max_tokens=12)).json()
    assert_succeeded_text(rec)
    assert sha256(http.get(rec["artifact"]["url"]).content) == rec["artifact"]["sha256"]
    assert (cluster.shared / rec["artifact"]["sha256"][:2]).is_dir()  # written to the shared directory
    assert rec["id"] in postgres.dump(cluster.env["GENFORGE_DATABASE_URL"])
    assert not loaded_models(cluster.api.proc.pid), "the API process loaded a model"
    assert not list(cluster.api.data_dir.rglob("*.db"))
    # counted by the worker that ran it, on its own /metrics
    assert cluster.worker_counts("genforge_requests_total", content_type="text", status="succeeded") == 1
    assert cluster.worker_counts("genforge_tokens_generated_total") == rec["usage"]["completion_tokens"]

    # SSE: tokens come from the worker through Redis pub/sub, then the final record
    with http.stream("POST", GENERATE, json={**text_body("Name a bird.", max_tokens=12), "stream": True}) as s:
        body = s.read().decode()
    assert body.count("event: token") >= 2 and "event: done" in body, body[-400:]

    # two long jobs keep both workers busy; a third waits with its queue position, and is cancelled unrun
    running = [http.post(GENERATE, json={**long_generation_body(), "mode": "async"}) for _ in range(2)]
    assert all(r.status_code == 202 and r.headers["Location"] for r in running)
    ids = [r.json()["id"] for r in running]
    wait_for(lambda: all(cluster.record(i)["status"] == "running" for i in ids), 60, 0.1, "both jobs to run")
    waiting = http.post(GENERATE, json={**text_body("Name a tree.", max_tokens=8), "mode": "async"}).json()
    assert cluster.record(waiting["id"])["queue_position"] == 1
    cancelled = http.post(f"{CONTENT}/{waiting['id']}/cancel").json()
    assert cancelled["status"] == "cancelled" and cancelled["error"]["code"] == "cancelled"

    # cancel of a running job: its worker stops between tokens
    stopped = http.post(f"{CONTENT}/{ids[0]}/cancel").json()
    assert stopped["status"] == "cancelled" and stopped["artifact"] is None
    http.post(f"{CONTENT}/{ids[1]}/cancel")
    time.sleep(2)  # a task for the cancelled pending record, if any worker took it, would have run by now
    assert cluster.record(waiting["id"])["status"] == "cancelled"
    assert cluster.record(waiting["id"])["text"] is None

    # a remote model runs on a worker too; one that is down is 503 model_unavailable through the relay
    base = f"http://127.0.0.1:{free_port()}/v1"
    add = run_cli(cluster.tmp / "cli", "models", "add-remote", "far", "--base-url", base, "--model", "x",
                  env=cluster.env)  # fmt: skip
    assert add.returncode == 0, add.stdout + add.stderr
    down = http.post(GENERATE, json={**text_body(max_tokens=8), "model": "far"})
    err = assert_error(down, 503, "model_unavailable")
    assert base in err["hint"] and cluster.record(err["content_id"])["model"]["remote"] is True

    # doctor checks the broker, the workers and the types they serve, the shared directory, and runs its
    # smoke generation on a worker
    doctor = run_cli(cluster.tmp / "doctor", "doctor", env=cluster.env)
    assert doctor.returncode == 0, doctor.stdout + doctor.stderr
    assert "ok   broker" in doctor.stdout and doctor.stdout.count("serves text") == 2, doctor.stdout
    assert "ok   shared artifact directory" in doctor.stdout and "ok   smoke generation (text" in doctor.stdout


def test_a_worker_killed_mid_job_costs_one_more_run_never_a_false_success(cluster):
    http = cluster.http
    job = http.post(GENERATE, json={**long_generation_body(600), "mode": "async"}).json()
    wait_for(lambda: cluster.record(job["id"])["status"] == "running", 60, 0.1, "the job to run")
    time.sleep(1.0)
    holder = subprocess.run(  # the lease names the worker process that runs the job
        ["redis-cli", "-u", cluster.env["GENFORGE_BROKER_URL"], "get", f"genforge:lease:{job['id']}"],
        capture_output=True,
        text=True,
    ).stdout.strip()
    victim = next(w for w in cluster.workers if holder.endswith(f"-{w.pid}"))
    victim.kill(signal.SIGKILL)
    victim.proc.wait(timeout=30)
    final = wait_for(
        lambda: (r := cluster.record(job["id"]))["status"] in ("succeeded", "failed") and r, 180, 0.5, "the end"
    )
    if final["status"] == "succeeded":  # ran once more on the other worker
        assert sha256(http.get(final["artifact"]["url"]).content) == final["artifact"]["sha256"]
    else:
        assert final["error"]["code"] == "interrupted" and final["artifact"] is None
    listed = {r["artifact"]["sha256"] for r in http.get(CONTENT).json()["items"] if r["artifact"]}
    stored = {p.stem for p in files_under(cluster.shared) if p.name != LOCK_NAME}
    assert stored == listed, "an orphan file in the shared directory"


def test_a_worker_whose_metrics_port_is_taken_does_not_start(tmp_path):
    pytest.importorskip("celery", reason="celery is not installed (pip install 'genforge[distributed]')")
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = {"GENFORGE_QUEUE": "celery", "GENFORGE_BROKER_URL": "redis://127.0.0.1:1/0"}  # never reached
        run = run_cli(tmp_path, "worker", "--metrics-port", str(port), env=env, timeout=60)
    assert run.returncode == 1, run.stdout + run.stderr
    assert f"metrics port 127.0.0.1:{port} cannot be used" in run.stderr and "--metrics-port" in run.stderr
    assert not (tmp_path / "genforge.db").exists()  # it stopped before opening anything
