"""History survives restarts; what a crash left unfinished is reported as failed, and stray files go."""

from __future__ import annotations

import os
import time
from datetime import UTC, datetime

import pytest

from conftest import (
    CONTENT,
    GENERATE,
    TEXT_SETTINGS,
    assert_failed,
    files_under,
    make_settings,
    running_app,
    sha256,
    text_body,
)
from genforge.errors import EngineFailed
from genforge.runtime import Runtime
from genforge.stores.artifacts import TEMP_ORPHAN_AGE_S
from genforge.stores.db import ContentRow, Database


def test_the_record_and_its_file_survive_a_restart(tmp_path):
    settings = make_settings(tmp_path / "data", preload=False)
    with running_app(settings) as client:
        resp = client.post(GENERATE, json=text_body("Name a fruit.", max_tokens=10))
        assert resp.status_code == 201, resp.text
        before = resp.json()

    with running_app(settings) as client:  # a new app, same data directory
        after = client.get(f"{CONTENT}/{before['id']}")
        assert after.status_code == 200
        assert after.json() == before
        file = client.get(before["artifact"]["url"])
        assert file.status_code == 200 and sha256(file.content) == before["artifact"]["sha256"]
        assert client.get(CONTENT).json()["total"] == 1


def test_a_restart_fails_what_a_crash_left_unfinished_and_removes_stray_files(tmp_path):
    settings = make_settings(tmp_path / "data", preload=False)
    with running_app(settings) as client:
        kept = client.post(GENERATE, json=text_body("Name a vegetable.", max_tokens=8)).json()
        assert kept["status"] == "succeeded"

    # What a crash mid-generation leaves: a record still running, a file no record owns, a temp file.
    db = Database(settings.db_url)
    with db.session() as s:
        s.add(
            ContentRow(
                id="crashed-0000",
                content_type="text",
                status="running",
                prompt="lost",
                quality="standard",
                params=TEXT_SETTINGS,
                extra={},
                created_at=datetime.now(UTC),
            )
        )
    db.dispose()
    stray = settings.artifacts_dir / "ab" / ("ab" + "0" * 62 + ".txt")
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_text("written just before the crash")
    temp = settings.artifacts_dir / "ab" / ".tmp-half-written.txt"
    temp.write_text("half")
    long_ago = time.time() - TEMP_ORPHAN_AGE_S - 60  # a younger temp file may still be being written
    os.utime(temp, (long_ago, long_ago))

    with running_app(settings) as client:
        rec = client.get(f"{CONTENT}/crashed-0000").json()
        assert_failed(rec, "interrupted")
        assert not stray.exists() and not temp.exists()
        assert [p.stem for p in files_under(settings.artifacts_dir)] == [kept["artifact"]["sha256"]]
        assert client.get(kept["artifact"]["url"]).content == kept["text"].encode()


def test_a_closed_runtime_starts_no_engine_process(tmp_path):
    """A preload (or any late call) racing shutdown gets engine_failed; no worker process outlives the runtime."""
    runtime = Runtime.open(make_settings(tmp_path / "data"))
    runtime.close()
    model = runtime.catalog.resolve(runtime.settings.default_text_model)
    with pytest.raises(EngineFailed, match="stopped"):
        runtime.worker.load(model)
    runtime.preload()  # the preload thread's path: the failure is recorded, nothing is started
    assert runtime.worker.pid is None and not runtime.preloaded
    assert "stopped" in runtime.load_error
