"""Backups that restore, and the audit that proves it.

`backup DEST` copies the SQLite database with SQLite's online backup API (a consistent snapshot, also
while the server writes) and then every artifact file the snapshot's records refer to, each checked
against its recorded sha256. `restore SRC` puts a backup into an empty data dir. `audit` re-hashes the
artifact of every `succeeded` record; with `mark`, a record whose file is missing or changed turns
`failed` with code `artifact_lost` or `artifact_changed`, the reason in its message, and no artifact,
so that no record claims a file that is gone. (A changed file is then referred to by no record and is
removed as an orphan when the server next starts.)
"""

from __future__ import annotations

import json
import os
import shutil
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from genforge.config import Settings
from genforge.errors import InvalidRequest, StorageFailed
from genforge.media.files import sha256_file
from genforge.stores.db import ContentRow, Database

DB_NAME = "genforge.stores.db"
MANIFEST = "genforge-backup.json"


@dataclass
class Problem:
    content_id: str
    code: str  # artifact_lost | artifact_changed
    message: str


def _sqlite_path(settings: Settings) -> Path:
    url = settings.db_url
    if not url.startswith("sqlite:///"):
        raise InvalidRequest(
            "backup and restore handle SQLite databases only", hint="Back up other databases with their own tools."
        )
    return Path(url.removeprefix("sqlite:///"))


def _empty(path: Path) -> bool:
    return not path.exists() or (path.is_dir() and not any(path.iterdir()))


def _artifact_paths(db_file: Path) -> list[tuple[str, str, int]]:
    """(relpath, sha256, size) of every artifact a record in this database refers to."""
    conn = sqlite3.connect(db_file)
    try:
        return conn.execute(
            "SELECT DISTINCT artifact_path, artifact_sha256, artifact_size FROM content WHERE artifact_path IS NOT NULL"
        ).fetchall()
    finally:
        conn.close()


def _copy_db(source: Path, target: Path) -> None:
    """SQLite's online backup API: page by page, consistent even while another process writes."""
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(target)
    try:
        with dst:
            src.backup(dst)
    finally:
        src.close()
        dst.close()


def backup(settings: Settings, dest: Path) -> dict:
    """Write a consistent copy of the database and its artifacts into `dest` (new or empty)."""
    source = _sqlite_path(settings)
    if not source.is_file():
        raise InvalidRequest(f"there is no database at {source}", hint="Check GENFORGE_DATA_DIR.")
    if not _empty(dest):
        raise InvalidRequest(f"{dest} is not empty", field="dest", hint="Back up into a new or empty directory.")
    dest.mkdir(parents=True, exist_ok=True)
    db_copy = dest / DB_NAME
    try:
        _copy_db(source, db_copy)
    except sqlite3.Error as exc:
        raise StorageFailed(f"the database backup failed: {exc}", hint="Check free space at the destination.") from exc
    copied, missing = 0, []
    for relpath, digest, _size in _artifact_paths(db_copy):
        src_file = settings.artifacts_dir / relpath
        target = dest / "artifacts" / relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            shutil.copyfile(src_file, target)
        except FileNotFoundError:
            missing.append(relpath)
            continue
        if sha256_file(target) != digest:  # changed behind genforge's back: not a faithful copy
            target.unlink()
            missing.append(relpath)
            continue
        copied += 1
    manifest = {
        "created_at": datetime.now(UTC).isoformat(),
        "database": DB_NAME,
        "artifacts": copied,
        "missing": missing,
    }
    (dest / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest


def restore(settings: Settings, src: Path) -> dict:
    """Put the backup at `src` into the configured data dir, which must be empty."""
    target_db = _sqlite_path(settings)
    if not (src / DB_NAME).is_file():
        raise InvalidRequest(f"{src} holds no genforge backup ({DB_NAME} is missing)", field="src")
    data_dir = settings.data_dir
    if not _empty(data_dir) or target_db.exists():
        raise InvalidRequest(
            f"the data directory {data_dir} is not empty",
            field="data_dir",
            hint="Restore into an empty directory (set GENFORGE_DATA_DIR), so nothing is overwritten.",
        )
    data_dir.mkdir(parents=True, exist_ok=True)
    target_db.parent.mkdir(parents=True, exist_ok=True)
    _copy_db(src / DB_NAME, target_db)
    files = 0
    if (src / "artifacts").is_dir():
        shutil.copytree(src / "artifacts", settings.artifacts_dir, dirs_exist_ok=True)
        files = sum(1 for p in settings.artifacts_dir.rglob("*") if p.is_file())
    os.sync()
    return {"database": str(target_db), "artifacts": files}


def audit(settings: Settings, mark: bool = False) -> tuple[int, list[Problem]]:
    """(records checked, problems): every `succeeded` record's artifact, re-hashed."""
    db = Database(settings.db_url)
    db.migrate()
    root = settings.artifacts_dir
    problems: list[Problem] = []
    checked = 0
    try:
        with db.session() as s:
            rows = s.query(ContentRow).filter(ContentRow.status == "succeeded").all()
            for row in rows:
                checked += 1
                problem = _check(row, root)
                if problem is None:
                    continue
                problems.append(problem)
                if mark:
                    row.status, row.finished_at = "failed", row.finished_at or datetime.now(UTC)
                    row.error_code, row.error_message = problem.code, problem.message
                    row.error_hint = "The artifact cannot be served; generate the content again."
                    row.artifact_sha256 = row.artifact_size = row.artifact_media_type = row.artifact_path = None
    finally:
        db.dispose()
    return checked, problems


def _check(row: ContentRow, root: Path) -> Problem | None:
    recorded = f"sha256 {row.artifact_sha256}, {row.artifact_size} bytes"
    if not row.artifact_path:
        return Problem(row.id, "artifact_lost", "the record is succeeded but names no artifact file")
    path = root / row.artifact_path
    if not path.is_file():
        return Problem(row.id, "artifact_lost", f"the artifact file {row.artifact_path} ({recorded}) is missing")
    size = path.stat().st_size
    digest = sha256_file(path)
    if size != row.artifact_size or digest != row.artifact_sha256:
        return Problem(
            row.id,
            "artifact_changed",
            f"the artifact file {row.artifact_path} changed: recorded {recorded}, found sha256 {digest}, {size} bytes",
        )
    return None
