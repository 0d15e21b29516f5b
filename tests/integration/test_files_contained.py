"""Issue 27, findings 2 and 7, in-process on the real model: an artifact path read from the database is never
followed outside the artifact directory (not served, hashed or unlinked; `genforge audit` names the record), and
start-up recovery removes only files it has proven orphaned under the store's guard."""

from __future__ import annotations

import os
import shutil
import threading
import time
from datetime import UTC, datetime
from pathlib import Path

from conftest import CONTENT, GENERATE, TEXT_SETTINGS, assert_error, run_cli, runtime_of, text_body
from genforge.stores import artifacts as storage
from genforge.stores.db import ContentRow


def craft(runtime, content_id: str, artifact_path: str) -> None:
    """What a crafted or damaged backup leaves: a record whose artifact path leads elsewhere."""
    with runtime.db.session() as s:
        s.get(ContentRow, content_id).artifact_path = artifact_path


def test_a_recorded_path_outside_the_artifact_dir_is_never_followed(app_with, tmp_path):
    data = tmp_path / "data"
    client = app_with(data_dir=data, preload=False)
    runtime = runtime_of(client)
    recs = []
    for seed in (1, 2, 3, 4):
        resp = client.post(GENERATE, json=text_body(max_tokens=8, seed=seed))
        assert resp.status_code == 201, resp.text
        recs.append(resp.json())
    # The outside file has the record's very bytes (so its sha256 and size match): only containment refuses it.
    outside = tmp_path / "outside"
    outside.mkdir()
    crafted = {}
    for rec, how in zip(recs, ("absolute", "climb", "link", "deleted"), strict=True):
        inside = runtime.store.root / f"{rec['artifact']['sha256'][:2]}/{rec['artifact']['sha256']}.txt"
        copy = outside / f"{how}.txt"
        shutil.copyfile(inside, copy)
        if how == "link":  # a link planted inside the store that leads out
            link = runtime.store.root / "ab" / "planted.txt"
            link.parent.mkdir(exist_ok=True)
            link.symlink_to(copy)
            path = "ab/planted.txt"
        elif how == "climb":
            path = os.path.relpath(copy, runtime.store.root)
        else:
            path = str(copy)
        craft(runtime, rec["id"], path)
        crafted[rec["id"]] = copy

    for content_id, copy in crafted.items():
        for method, url in (
            ("GET", f"{CONTENT}/{content_id}/file"),
            ("POST", f"{CONTENT}/{content_id}/verify"),
            ("GET", f"{CONTENT}/{content_id}/credentials"),
        ):
            resp = client.request(method, url)
            assert_error(resp, 409, "artifact_outside_store")
            assert copy.read_bytes() not in resp.content

    deleted = recs[3]["id"]
    assert client.delete(f"{CONTENT}/{deleted}").status_code == 204  # the record goes ...
    assert client.get(f"{CONTENT}/{deleted}").status_code == 404
    assert crafted[deleted].exists(), "deleting a record unlinked a file outside the artifact directory"

    audit = run_cli(data, "audit")
    assert audit.returncode == 1, audit.stdout + audit.stderr
    for rec in recs[:3]:
        assert f"artifact_outside_store {rec['id']}" in audit.stdout, audit.stdout
    assert run_cli(data, "audit", "--mark").returncode == 1
    for rec in recs[:3]:
        after = client.get(f"{CONTENT}/{rec['id']}").json()
        assert after["status"] == "failed" and after["error"]["code"] == "artifact_outside_store"
        assert after["artifact"] is None
    assert all(copy.exists() for copy in crafted.values())


def record_file(runtime, content_id: str, stored) -> None:
    with runtime.db.session() as s:
        s.add(
            ContentRow(
                id=content_id,
                content_type="text",
                status="succeeded",
                prompt="p",
                quality="standard",
                params=TEXT_SETTINGS,
                extra={},
                created_at=datetime.now(UTC),
                finished_at=datetime.now(UTC),
                artifact_sha256=stored.sha256,
                artifact_size=stored.size_bytes,
                artifact_media_type=stored.media_type,
                artifact_path=stored.relpath,
            )
        )


def test_recovery_removes_only_files_proven_orphaned_under_the_guard(app_with, tmp_path):
    runtime = runtime_of(app_with(data_dir=tmp_path / "data", preload=False))
    store = runtime.store
    # A generation in flight (a CLI run beside the server, say): under the guard it has written its file and
    # is about to commit the record that refers to it.
    written, release, made = threading.Event(), threading.Event(), {}

    def generation() -> None:
        with store.guard():
            made["stored"] = store.write(b"generated just now", "text/plain")
            written.set()
            release.wait(30)
            record_file(runtime, "in-flight-0001", made["stored"])

    gen = threading.Thread(target=generation)
    gen.start()
    assert written.wait(30)
    # What recovery may and may not remove: an orphan and an old temp file go; a temp file being written and
    # another program's file stay.
    orphan = store.root / "cd" / ("cd" + "1" * 62 + ".txt")
    young, old = store.root / "cd" / ".tmp-writing.txt", store.root / "cd" / ".tmp-old.txt"
    foreign = store.root / "notes"
    orphan.parent.mkdir(exist_ok=True)
    for path in (orphan, young, old, foreign):
        path.write_text("x")
    long_ago = time.time() - storage.TEMP_ORPHAN_AGE_S - 60
    os.utime(old, (long_ago, long_ago))

    recovered = {}
    recovery = threading.Thread(target=lambda: recovered.update(runtime.service.recover()))
    recovery.start()
    recovery.join(1.0)
    assert recovery.is_alive(), "recovery did not wait for the store's guard"
    release.set()
    gen.join(30)
    recovery.join(30)
    assert not recovery.is_alive()
    assert Path(made["stored"].path).read_bytes() == b"generated just now", "recovery removed a live artifact"
    assert not orphan.exists() and not old.exists()
    assert young.exists() and foreign.exists()
    assert recovered["orphans_removed"] == 2
