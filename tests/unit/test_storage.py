"""ArtifactStore: atomic, content-addressed writes that leave nothing behind when they fail."""

from __future__ import annotations

import errno
import os
import time

import pytest

from conftest import enospc, files_under, sha256
from genforge.errors import ArtifactOutsideStore, StorageFailed
from genforge.media.files import sha256_file
from genforge.stores import artifacts as storage
from genforge.stores.artifacts import ArtifactStore


@pytest.fixture
def store(tmp_path) -> ArtifactStore:
    return ArtifactStore(tmp_path / "artifacts")


def test_write_stores_the_bytes_under_their_sha256(store):
    data = "Grüße aus der Werkstatt\n".encode()
    stored = store.write(data, "text/plain", ".txt")

    assert stored.sha256 == sha256(data)
    assert stored.size_bytes == len(data)
    assert stored.media_type == "text/plain"
    assert stored.relpath == f"{stored.sha256[:2]}/{stored.sha256}.txt"
    assert stored.path == store.root / stored.relpath == store.resolve(stored.relpath)
    assert stored.path.read_bytes() == data
    assert sha256_file(stored.path) == stored.sha256
    assert stored.created is True
    assert files_under(store.root) == [stored.path], "a temp file was left next to the artifact"


@pytest.mark.parametrize(
    ("media_type", "suffix"), [("image/png", ".png"), ("audio/wav", ".wav"), ("application/x-unknown", None)]
)
def test_the_file_takes_its_content_types_suffix(store, media_type, suffix):
    stored = store.write(b"\x89 some bytes", media_type, suffix) if suffix else store.write(b"\x89 some", media_type)
    assert stored.path.suffix == (suffix or ".bin")


def test_identical_content_is_stored_once(store):
    first = store.write(b"same words", "text/plain", ".txt")
    second = store.write(b"same words", "text/plain", ".txt")
    other = store.write(b"other words", "text/plain", ".txt")

    assert second.path == first.path and second.sha256 == first.sha256
    assert first.created and not second.created, "the second write must know the file was already there"
    assert other.path != first.path
    assert len(files_under(store.root)) == 2


def test_remove_deletes_and_tolerates_a_missing_file(store):
    stored = store.write(b"to be removed", "text/plain", ".txt")
    store.remove(stored.relpath)
    assert not stored.path.exists()
    store.remove(stored.relpath)  # already gone: no error


@pytest.mark.parametrize("failing", ["fsync", "replace"])
def test_enospc_raises_storage_failed_and_leaves_no_file(store, monkeypatch, failing):
    monkeypatch.setattr(storage.os, failing, enospc)

    with pytest.raises(StorageFailed) as info:
        store.write(b"a text that does not fit on the disk", "text/plain", ".txt")

    assert info.value.code == "storage_failed"
    assert os.strerror(errno.ENOSPC) in info.value.message
    assert info.value.hint
    assert files_under(store.root) == [], "a temp or partial file was left behind"


def test_failed_rewrite_keeps_an_existing_identical_artifact(store, monkeypatch):
    existing = store.write(b"already stored", "text/plain", ".txt")
    monkeypatch.setattr(storage.os, "replace", enospc)

    with pytest.raises(StorageFailed):
        store.write(b"already stored", "text/plain", ".txt")

    assert files_under(store.root) == [existing.path]
    assert existing.path.read_bytes() == b"already stored"


def test_directory_fsync_failure_leaves_no_file(store, monkeypatch):
    real_fsync = os.fsync
    calls = []

    def fsync_fails_on_the_directory(fd):
        calls.append(fd)
        if len(calls) == 2:  # 1: the temp file, 2: the directory after the rename
            enospc()
        return real_fsync(fd)

    monkeypatch.setattr(storage.os, "fsync", fsync_fails_on_the_directory)
    with pytest.raises(StorageFailed):
        store.write(b"written, renamed, then the directory sync fails", "text/plain", ".txt")

    assert files_under(store.root) == [], "a write reported as failed left its file behind"


# --- a recorded path never leads outside the store (a crafted or damaged database) --------------------------
@pytest.fixture
def outside(tmp_path):
    secret = tmp_path / "elsewhere" / "secret.txt"
    secret.parent.mkdir()
    secret.write_text("not the store's")
    return secret


def hostile_paths(store, outside) -> list[str]:
    link = store.root / "ab" / "link.txt"
    link.parent.mkdir(parents=True, exist_ok=True)
    link.symlink_to(outside)  # inside by name, outside once resolved
    return [
        str(outside),  # absolute: Path(root) / "/x" is /x
        os.path.relpath(outside, store.root),  # ../elsewhere/secret.txt
        "ab/../../elsewhere/secret.txt",
        "ab/link.txt",
        "ab/x\0.txt",
        "",
        ".",
    ]


def test_resolve_refuses_every_path_that_leaves_the_store(store, outside):
    store.write(b"inside", "text/plain")
    for relpath in hostile_paths(store, outside):
        with pytest.raises(ArtifactOutsideStore) as refused:
            store.resolve(relpath)
        assert refused.value.code == "artifact_outside_store", relpath


def test_remove_never_unlinks_a_file_outside_the_store(store, outside):
    for relpath in hostile_paths(store, outside):
        store.remove(relpath)  # the record that named it may go; the file is not the store's
        assert outside.read_text() == "not the store's", relpath


def test_orphans_are_only_the_stores_own_names_and_old_temp_files(store, tmp_path):
    kept = store.write(b"recorded", "text/plain")
    orphan = store.write(b"written just before a crash", "text/plain")
    young = store.root / "ab" / ".tmp-being-written.txt"
    old = store.root / "ab" / ".tmp-left-by-a-crash.txt"
    foreign = store.root / "README.txt"  # not a name the store gives: another program's file
    young.parent.mkdir(exist_ok=True)
    for path in (young, old, foreign):
        path.write_text("x")
    long_ago = time.time() - storage.TEMP_ORPHAN_AGE_S - 60
    os.utime(old, (long_ago, long_ago))

    removed = store.remove_orphans(lambda: {kept.relpath})
    assert sorted(removed) == sorted([orphan.path, old])
    assert kept.path.exists() and young.exists() and foreign.exists()
