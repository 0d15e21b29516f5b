"""Health, readiness, the model list, and the content types whose engines do not exist yet."""

from __future__ import annotations

import shutil

import pytest

from conftest import (
    CONTENT,
    DEFAULT_MODEL,
    GENERATE,
    assert_error,
    copy_packaged_model,
    failed_record,
    fake_gguf,
    make_settings,
    open_catalog,
    wait_for,
)
from genforge import __version__
from genforge.contenttypes import CONTENT_TYPES
from genforge.core.catalog import PACKAGED

pytestmark = pytest.mark.both_modes
# In the distributed mode the API process loads no model: its readiness asks for workers, not for a model file.
MODELS_ARE_THE_WORKERS = "the API process of the distributed mode checks no model file (the workers load them)"


def test_healthz(live):
    resp = live.client.get("/healthz")
    assert resp.status_code == 200
    assert resp.json() == {"status": "ok", "version": __version__}


@pytest.mark.only_in("embedded", reason=MODELS_ARE_THE_WORKERS)
def test_readyz_reports_each_check_and_the_engine_worker(live):
    def ready_with_worker():
        body = live.client.get("/readyz").json()
        return body if body["checks"]["engine_worker"]["pid"] else None

    body = wait_for(ready_with_worker, what="the engine worker to start")
    resp = live.client.get("/readyz")
    assert resp.status_code == 200, resp.text
    assert body["ready"] is True
    checks = body["checks"]
    assert {"database", "default_text_model", "engine_worker"} <= set(checks)
    assert all(c["ok"] for c in checks.values())
    assert PACKAGED[DEFAULT_MODEL].sha256[:12] in checks["default_text_model"]["detail"]
    assert isinstance(checks["engine_worker"]["pid"], int)


@pytest.mark.only_in("distributed", reason="workers exist in the distributed mode only")
def test_readyz_names_the_workers_and_the_types_they_serve(live):
    body = live.client.get("/readyz").json()
    assert body["ready"] is True, body
    checks = body["checks"]
    assert set(checks) == {"database", "workers", "queue"}, "the API process has no engine worker"
    assert checks["workers"]["detail"].endswith(": " + ", ".join(sorted(CONTENT_TYPES))), checks["workers"]
    assert all(c["ok"] for c in checks.values())


@pytest.fixture
def data_with_missing_default(tmp_path):
    """A data dir whose default text model is a registered user GGUF that has since been deleted."""
    settings = make_settings(tmp_path / "data", default_text_model="gone")
    path = fake_gguf(tmp_path / "gone.gguf")
    open_catalog(settings).add(path, name="gone")
    path.unlink()
    return settings, path


@pytest.mark.only_in("embedded", reason=MODELS_ARE_THE_WORKERS)
def test_readyz_is_503_with_the_reason_when_the_default_model_is_missing(app_with, data_with_missing_default):
    settings, path = data_with_missing_default
    client = app_with(data_dir=settings.data_dir, default_text_model="gone")

    resp = client.get("/readyz")
    assert resp.status_code == 503
    body = resp.json()
    assert body["ready"] is False
    assert body["checks"]["database"]["ok"] is True
    check = body["checks"]["default_text_model"]
    assert check["ok"] is False
    assert str(path) in check["detail"] and "missing" in check["detail"]
    assert client.get("/healthz").status_code == 200, "the process is up even when it is not ready"


@pytest.mark.only_in("embedded", reason=MODELS_ARE_THE_WORKERS)
def test_readyz_is_503_when_the_default_model_is_unknown(app_with):
    client = app_with(default_text_model="never-registered", preload=False)
    resp = client.get("/readyz")
    assert resp.status_code == 503
    assert "never-registered" in resp.json()["checks"]["default_text_model"]["detail"]


@pytest.mark.only_in("embedded", reason=MODELS_ARE_THE_WORKERS)
def test_readyz_recovers_when_the_default_model_comes_back(app_with, tmp_path):
    settings = make_settings(tmp_path / "data", default_text_model="mine")
    path = copy_packaged_model(tmp_path / "mine.gguf")
    open_catalog(settings).add(path, name="mine")
    away = path.rename(tmp_path / "elsewhere.gguf")  # moved away while the server starts
    client = app_with(data_dir=settings.data_dir, default_text_model="mine")
    resp = client.get("/readyz")
    assert resp.status_code == 503 and "missing" in resp.json()["checks"]["default_text_model"]["detail"]

    shutil.move(away, path)  # back, unchanged (same size and mtime, same sha256)
    resp = client.get("/readyz")
    assert resp.status_code == 200, f"/readyz after the model came back: {resp.status_code} {resp.text}"


def test_models_lists_both_packaged_models_with_installed_flags(app_with):
    client = app_with(preload=False)
    resp = client.get("/api/v1/models")
    assert resp.status_code == 200
    body = resp.json()
    assert body["default_text_model"] == DEFAULT_MODEL
    models = {m["name"]: m for m in body["items"]}
    assert set(PACKAGED) <= set(models)
    smol, gemma = models[DEFAULT_MODEL], models["gemma3-270m"]
    assert (smol["installed"], smol["type"], smol["engine"]) == (True, "text", "llama.cpp")
    assert smol["sha256"] == PACKAGED[DEFAULT_MODEL].sha256 and smol["size_bytes"] > 50_000_000
    assert gemma["installed"] is False and gemma["path"] is None  # fresh data dir: not assembled


@pytest.mark.parametrize("content_type", ["image", "speech", "voice"])
def test_types_without_an_installed_model_are_503_with_a_failed_record(live, content_type, monkeypatch):
    """A type with no installed model answers an honest 503 with a record, never a silent substitute."""
    kind = "speech" if content_type == "voice" else content_type
    # As on a machine without a voice or checkpoint: no default model for the type (the packaged face
    # generator is never a default; the packaged voice is installed by the test setup, so it is hidden here).
    monkeypatch.setattr(live.runtime.catalog, "default_for", lambda _type: None)
    resp = live.client.post(GENERATE, json={"content_type": content_type, "prompt": "a lighthouse at dusk"})
    err = assert_error(resp, 503, "model_unavailable")
    assert kind in err["message"] + err["hint"]
    rec = failed_record(live.client, resp, "model_unavailable")
    assert rec["content_type"] == kind
    assert rec["prompt"] == "a lighthouse at dusk"
    assert rec["error"]["hint"] == err["hint"]
    listed = live.client.get(CONTENT, params={"status": "failed", "content_type": rec["content_type"]}).json()
    assert rec["id"] in [r["id"] for r in listed["items"]]
