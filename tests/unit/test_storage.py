"""ArtifactStore: atomic, content-addressed writes that leave nothing behind when they fail."""

from __future__ import annotations

import errno
import os

import pytest

from conftest import enospc, files_under, sha256
from genforge.errors import StorageFailed
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
