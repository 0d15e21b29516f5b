"""Private files: everything genforge creates for itself (the data dir, the database, the keystore, artifacts,
backups) is readable by its own user only, whatever the process's umask: directories 0700, files 0600.

Every path that creates one of them calls these helpers. A directory or file that already exists keeps its mode:
the operator may have chosen it (a shared artifact dir with group access, say)."""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import IO

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """Create `path` and every missing parent with mode 0700; returns `path`."""
    path = Path(path)
    missing: list[Path] = []
    p = path
    while not p.is_dir():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:
            if not d.is_dir():  # a file (or a link to one) where a directory belongs: a real error
                raise
    return path


def _opener(path: str, flags: int) -> int:
    return os.open(path, flags, FILE_MODE)


def open_private(path: Path, mode: str = "wb") -> IO:
    """open() whose newly created file is mode 0600 (its folder is created 0700)."""
    private_dir(Path(path).parent)
    return open(path, mode, opener=_opener)


def private_file(path: Path) -> Path:
    """Create `path` empty with mode 0600 if it is not there (a file another library then opens, such as
    SQLite's database, which would otherwise be created 0644 and give its -wal and -shm files that mode too)."""
    with open_private(path, "ab"):
        pass
    return Path(path)


def copy_private(src: Path, dst: Path) -> None:
    """Copy a file's bytes into a new private file (not its mode: a backup's files are private whatever the
    source's mode was)."""
    with open(src, "rb") as fsrc, open_private(dst, "wb") as fdst:
        shutil.copyfileobj(fsrc, fdst, 1 << 20)
