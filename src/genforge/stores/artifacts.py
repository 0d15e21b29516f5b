"""ArtifactStore: content-addressed files, written atomically (temp file, fsync, rename, fsync dir)."""

from __future__ import annotations

import fcntl
import hashlib
import os
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from genforge.errors import StorageFailed


@dataclass(frozen=True)
class StoredArtifact:
    sha256: str
    size_bytes: int
    media_type: str
    path: Path  # absolute
    relpath: str  # relative to the store root, as recorded in the database
    created: bool  # False when an identical artifact was already stored (content addressing)


LOCK_NAME = ".lock"  # in the store's root; never an artifact, never an orphan


class ArtifactStore:
    def __init__(self, root: Path):
        self.root = Path(root)
        self._thread_lock = threading.Lock()

    @contextmanager
    def guard(self) -> Iterator[None]:
        """Exclusive use of the store's files, across threads and processes (flock on the root's .lock).

        Identical outputs share one file. Writing it and committing the record that refers to it happen under
        the guard, and so do counting a deleted record's fellow users and removing the file: a delete can never
        remove a file that a generation has just written and is about to record as its own."""
        with self._thread_lock:
            self.root.mkdir(parents=True, exist_ok=True)
            fd = os.open(self.root / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX)
                yield
            finally:
                os.close(fd)  # releases the flock

    def path_for(self, sha256: str, suffix: str) -> tuple[Path, str]:
        rel = f"{sha256[:2]}/{sha256}{suffix}"
        return self.root / rel, rel

    def write(self, data: bytes, media_type: str, suffix: str = ".bin") -> StoredArtifact:
        """Durably store `data` (named by its sha256 and `suffix`, its content type's: `.png`); on any failure
        nothing is left behind and StorageFailed is raised."""
        digest = hashlib.sha256(data).hexdigest()
        final, rel = self.path_for(digest, suffix)
        tmp_name = None
        existed = final.exists()
        try:
            final.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=".tmp-", suffix=final.suffix)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp_name, final)
            tmp_name = None
            dir_fd = os.open(final.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        except OSError as exc:
            if tmp_name is not None:
                Path(tmp_name).unlink(missing_ok=True)
            elif not existed:  # renamed but not durable: ours alone, so it goes too
                final.unlink(missing_ok=True)
            raise StorageFailed(f"could not write the artifact: {exc.strerror or exc}") from exc
        return StoredArtifact(digest, len(data), media_type, final, rel, created=not existed)

    def resolve(self, relpath: str) -> Path:
        return self.root / relpath

    def files(self) -> list[Path]:
        """Every file in the store (artifacts and stray temp files), not its lock."""
        return [p for p in self.root.rglob("*") if p.is_file() and p.name != LOCK_NAME]

    def remove(self, relpath: str) -> None:
        (self.root / relpath).unlink(missing_ok=True)
