"""Throw-away PostgreSQL clusters, Redis servers, `genforge worker` processes and OpenAI-compatible servers,
started by the tests; and `distributed()`, the celery mode around one app (GENFORGE_TEST_MODE=distributed).

PostgreSQL and Redis come from the Debian packages `postgresql` and `redis-server`; a test that needs one and
finds it absent skips, saying which package to install. As root (CI) the cluster runs as the `postgres` user.
"""

from __future__ import annotations

import atexit
import glob
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from conftest import GENFORGE, cli_env, free_port, packaged_model_path, wait_for
from genforge.config import Settings
from genforge.contenttypes import CONTENT_TYPES


def _pg_bin() -> str | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    return found[-1] if found else None


def _as_postgres(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", "postgres", "--", *cmd] if os.geteuid() == 0 else cmd


class Postgres:
    """A PostgreSQL cluster of its own on a free loopback port (trust authentication, no disk sync)."""

    def __init__(self):
        self.bin = _pg_bin()
        self.data = tempfile.mkdtemp(prefix="gf-test-pg-")
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> Postgres:
        if os.geteuid() == 0:
            shutil.chown(self.data, "postgres", "postgres")
        cmd = [f"{self.bin}/initdb", "-D", self.data, "-A", "trust", "-U", "postgres", "--no-sync"]
        subprocess.run(_as_postgres(cmd), check=True, capture_output=True)
        server = [f"{self.bin}/postgres", "-D", self.data, "-p", str(self.port), "-k", self.data, "-h", "127.0.0.1"]
        server += ["-c", "fsync=off", "-c", "max_connections=200"]
        self.proc = subprocess.Popen(
            _as_postgres(server), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True
        )
        ready = [f"{self.bin}/pg_isready", "-h", "127.0.0.1", "-p", str(self.port)]
        wait_for(lambda: subprocess.run(ready, capture_output=True).returncode == 0, 30, 0.2, "PostgreSQL to start")
        return self

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def new_database(self) -> str:
        """A fresh, empty database in the cluster; its SQLAlchemy URL."""
        import psycopg

        name = f"gf_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(f"host=127.0.0.1 port={self.port} user=postgres dbname=postgres", autocommit=True) as c:
            c.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def dump(self, url: str) -> str:
        database = url.rsplit("/", 1)[1]
        cmd = [f"{self.bin}/pg_dump", "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", database]
        return subprocess.run(cmd, capture_output=True, text=True, check=True).stdout

    def stop(self) -> None:
        if self.proc is not None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        shutil.rmtree(self.data, ignore_errors=True)


_cluster: list[Postgres] = []


def shared_postgres() -> Postgres:
    """The test session's one PostgreSQL cluster, started on first use and stopped when the session ends; tests
    take fresh databases in it. Skips (with the package to install) where PostgreSQL is absent."""
    if not _cluster:
        if _pg_bin() is None:
            pytest.skip("PostgreSQL is not installed (Debian: apt-get install postgresql)")
        pytest.importorskip("psycopg", reason="psycopg is not installed (pip install 'genforge[distributed]')")
        _cluster.append(Postgres().start())
        atexit.register(_cluster[0].stop)
    return _cluster[0]


@pytest.fixture(scope="session")
def postgres() -> Postgres:
    return shared_postgres()


@pytest.fixture
def pg_url(postgres) -> str:
    """A fresh PostgreSQL database for one test."""
    return postgres.new_database()


class Redis:
    def __init__(self):
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    def start(self) -> Redis:
        cmd = ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        ping = ["redis-cli", "-p", str(self.port), "ping"]
        wait_for(lambda: subprocess.run(ping, capture_output=True, text=True).stdout.strip() == "PONG", 30, 0.1)
        return self

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def need_redis() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("Redis is not installed (Debian: apt-get install redis-server)")
    pytest.importorskip("celery", reason="celery is not installed (pip install 'genforge[distributed]')")


@pytest.fixture(scope="session")
def redis_server() -> Iterator[Redis]:
    need_redis()
    server = Redis().start()
    yield server
    server.stop()


class Worker:
    """`genforge worker` in a process group of its own, on its own data directory, with GENFORGE_* `env`."""

    def __init__(self, data_dir: Path, env: dict, types: str = "text", concurrency: int = 1):
        self.data_dir, self.env = data_dir, env
        self.args = ["worker", "--types", types, "--concurrency", str(concurrency)]
        self.log_path = data_dir.parent / f"{data_dir.name}.log"
        self.proc: subprocess.Popen | None = None

    def start(self) -> Worker:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(GENFORGE), *self.args],
                env={**cli_env(self.data_dir), **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        return self

    @property
    def pid(self) -> int:
        return self.proc.pid

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def kill(self, sig: int = signal.SIGKILL) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, sig)

    def stop(self, timeout: float = 30) -> None:
        """SIGTERM (Celery's warm shutdown lets a running task finish), SIGKILL after `timeout`."""
        if self.proc is None:
            return
        self.kill(signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill(signal.SIGKILL)
            self.proc.wait(timeout=10)


def settings_env(settings: Settings) -> dict:
    """The GENFORGE_* environment that gives another process the settings set here (data_dir aside)."""
    env = {}
    for name in sorted(settings.model_fields_set - {"data_dir"}):
        value = getattr(settings, name)
        if value is not None:
            env[f"GENFORGE_{name.upper()}"] = json.dumps(value) if isinstance(value, list | dict) else str(value)
    return env


_databases: dict[Path, str] = {}  # the distributed mode's database of each data dir


@contextmanager
def distributed(settings: Settings) -> Iterator[tuple[Settings, Worker]]:
    """The celery mode around one app: `settings` on a PostgreSQL database (the one they name, or their data dir's,
    fresh on its first app), a Redis of their own (its queues, events and leases are this app's alone) and a
    shared artifact directory, with a real `genforge worker` process (every content type, GENFORGE_PARALLEL task
    threads) on the same settings. Yields those settings, for the app (the API process) to run on, and the worker."""
    postgres = shared_postgres()
    need_redis()
    if not settings.database_url:  # one database per data dir, as embedded: a second app on it is a restart
        if settings.data_dir not in _databases:
            _databases[settings.data_dir] = postgres.new_database()
        settings = settings.model_copy(update={"database_url": _databases[settings.data_dir]})
    redis = Redis().start()
    shared = settings.data_dir.with_name(f"{settings.data_dir.name}-shared")
    try:
        settings = settings.model_copy(
            update={
                "queue": "celery",
                "broker_url": redis.url(),
                "artifact_dir": settings.artifact_dir or shared,
            }
        )
        # Started before the app: it waits for the app's migration, and imports meanwhile.
        worker = Worker(
            settings.data_dir.with_name(f"{settings.data_dir.name}-worker"),
            settings_env(settings),
            types=",".join(CONTENT_TYPES),
            concurrency=settings.parallel,
        ).start()
        try:
            yield settings, worker
        finally:
            worker.stop(timeout=10)
    finally:
        redis.stop()


class LlamaServer:
    """llama-cpp-python's own OpenAI-compatible server (`python -m llama_cpp.server`) on the packaged SmolLM2."""

    served_model = "smollm2-served"

    def __init__(self, log_dir: Path):
        self.port = free_port()
        self.log_path = log_dir / f"llama-server-{self.port}.log"
        self.proc: subprocess.Popen | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def start(self) -> LlamaServer:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(packaged_model_path())]
        cmd += ["--model_alias", self.served_model, "--host", "127.0.0.1", "--port", str(self.port)]
        cmd += ["--n_ctx", "1024", "--n_threads", "1", "--verbose", "false"]
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)

        def up() -> bool:
            assert self.proc.poll() is None, self.log_path.read_text(errors="replace")[-2000:]
            try:
                return httpx.get(f"{self.base_url}/models", timeout=5).status_code == 200
            except httpx.TransportError:
                return False

        wait_for(up, 120, 0.3, "llama_cpp.server to answer")
        return self

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture(scope="module")
def llama_server(tmp_path_factory) -> Iterator[LlamaServer]:
    for module in ("uvicorn", "fastapi", "sse_starlette", "starlette_context", "pydantic_settings"):
        pytest.importorskip(module, reason=f"llama_cpp.server needs {module} (pip install 'genforge[test]')")
    server = LlamaServer(tmp_path_factory.mktemp("llama-server")).start()
    yield server
    server.stop()
