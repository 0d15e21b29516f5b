"""File hashes and stats: the sha256 a record or a model entry keeps, and the cheap size/mtime check beside it."""

from __future__ import annotations

import hashlib
from pathlib import Path


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_path(path: Path) -> str:
    """sha256 of a file; for a directory (a diffusers checkpoint), of its files' relative paths and hashes."""
    path = Path(path)
    if path.is_file():
        return sha256_file(path)
    h = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        h.update(f"{f.relative_to(path)}\0{sha256_file(f)}\n".encode())
    return h.hexdigest()


def path_stat(path: Path) -> tuple[int, int]:
    """(total size, newest mtime_ns) of a file or of every file under a directory."""
    path = Path(path)
    if path.is_file():
        st = path.stat()
        return st.st_size, st.st_mtime_ns
    stats = [f.stat() for f in path.rglob("*") if f.is_file()]
    return sum(st.st_size for st in stats), max((st.st_mtime_ns for st in stats), default=0)
