"""ArtifactStore: content-addressed files, written atomically (temp file, fsync, rename, fsync dir)."""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from genforge.errors import ArtifactOutsideStore, StorageFailed
from genforge.media.private import private_dir

log = logging.getLogger("genforge.stores.artifacts")


@dataclass(frozen=True)
class StoredArtifact:
    sha256: str
    size_bytes: int
    media_type: str
    path: Path  # absolute
    relpath: str  # relative to the store root, as recorded in the database
    created: bool  # False when an identical artifact was already stored (content addressing)


LOCK_NAME = ".lock"  # in the store's root; never an artifact, never an orphan
TEMP_PREFIX = ".tmp-"
# A file the store itself names: SHA[:2]/SHA.SUFFIX, or a temp file beside one. Only these can be orphans.
_STORE_NAME = re.compile(r"([0-9a-f]{2})/(?:\1[0-9a-f]{62}\.[A-Za-z0-9]+|" + re.escape(TEMP_PREFIX) + r"[^/]+)")
# A temp file exists only while write() runs under the guard; one older than this is a crash's leftover (a
# younger one may belong to a writer the lock cannot see, such as another host on a shared file system).
TEMP_ORPHAN_AGE_S = 3600.0


def contained(root: Path, relpath: str) -> Path:
    """root/relpath, when that is a file name inside `root` (after resolving every symbolic link); otherwise
    ArtifactOutsideStore. Paths come from the database, which a crafted or damaged backup may have filled:
    `Path(root) / "/etc/passwd"` is /etc/passwd, and "../x" or a link inside the root may lead anywhere."""
    if not isinstance(relpath, str) or not relpath or "\0" in relpath or os.path.isabs(relpath):
        raise ArtifactOutsideStore(f"the recorded artifact path {relpath!r} is not a relative file name")
    path = Path(root) / relpath
    real_root = os.path.realpath(root)
    real = os.path.realpath(path)
    if real == real_root or os.path.commonpath([real_root, real]) != real_root:
        raise ArtifactOutsideStore(f"the recorded artifact path {relpath!r} leads outside the artifact directory")
    return path


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
            private_dir(self.root)
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
            private_dir(final.parent)
            fd, tmp_name = tempfile.mkstemp(dir=final.parent, prefix=TEMP_PREFIX, suffix=final.suffix)  # 0600
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
        """The file a record names; ArtifactOutsideStore when the name leads outside the store."""
        return contained(self.root, relpath)

    def files(self) -> list[Path]:
        """Every file in the store (artifacts and stray temp files), not its lock."""
        return [p for p in self.root.rglob("*") if p.is_file() and p.name != LOCK_NAME]

    def remove(self, relpath: str) -> None:
        """Unlink a stored file. A name that leads outside the store names no file of the store's: nothing is
        unlinked (the record that named it may still go), and the refusal is logged."""
        try:
            path = self.resolve(relpath)
        except ArtifactOutsideStore as exc:
            log.warning("not removing %s", exc.message)
            return
        path.unlink(missing_ok=True)

    def remove_orphans(self, referenced: Callable[[], set[str]]) -> list[Path]:
        """Remove the store's files that no record refers to; returns them.

        Proven under the guard: `referenced()` (the paths the database's records name) is read after the guard is
        taken, so a file a generation has written and is recording (which it does under the guard) is referred
        to by then. Only names the store itself gives are candidates (another program's file is never an
        orphan), and a temp file only once it is older than TEMP_ORPHAN_AGE_S."""
        removed: list[Path] = []
        with self.guard():
            known = referenced()
            now = time.time()
            for path in self.files():
                rel = path.relative_to(self.root).as_posix()
                if not _STORE_NAME.fullmatch(rel) or rel in known or path.is_symlink():
                    continue
                if path.name.startswith(TEMP_PREFIX) and now - path.stat().st_mtime < TEMP_ORPHAN_AGE_S:
                    continue
                path.unlink(missing_ok=True)
                removed.append(path)
        return removed
