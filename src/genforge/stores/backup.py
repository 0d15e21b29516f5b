"""Backups that restore, and the audit that proves it.

`backup DEST` copies the SQLite database with SQLite's online backup API (a consistent snapshot, also
while the server writes), then every artifact file the snapshot's records refer to, each checked
against its recorded sha256, and the instance's signing keystore (credentials/keystore.json: its CA, so that
a restored server still verifies its earlier artifacts as its own). Everything in a backup is private (0700 /
0600): the keystore holds private keys. `restore SRC` puts a backup into an empty data dir and an empty artifact
dir, after checking that every artifact path its records name stays inside the artifact dir. `audit` re-hashes
the artifact of every `succeeded` record; with `mark`, a record whose file is missing or changed (or whose path
leads outside the artifact dir) turns `failed` with code `artifact_lost`, `artifact_changed` (or
`artifact_outside_store`), the reason in its message, and no artifact, so that no record claims a file that is
gone. (A changed file is then referred to by no record and is removed as an orphan when the server next starts.)
"""

from __future__ import annotations

import json
import os
import sqlite3
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from genforge.config import Settings
from genforge.errors import ArtifactOutsideStore, InvalidRequest, StorageFailed
from genforge.media.files import sha256_file
from genforge.media.private import copy_private, open_private, private_dir, private_file
from genforge.stores.artifacts import contained
from genforge.stores.credentials import Credentials

DB_NAME = "genforge.db"
MANIFEST = "genforge-backup.json"
KEYSTORE = "credentials/keystore.json"  # in the backup, as in the data dir


@dataclass
class Problem:
    content_id: str
    code: str  # artifact_lost | artifact_changed | artifact_outside_store
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


def _upload_paths(db_file: Path) -> list[tuple[str, str]]:
    """(relpath, sha256) of every uploaded picture (uploads/, beside the artifacts) this database refers to."""
    conn = sqlite3.connect(db_file)
    try:
        return conn.execute("SELECT DISTINCT relpath, sha256 FROM uploads").fetchall()
    except sqlite3.OperationalError:  # a database from before migration 0012 has no uploads
        return []
    finally:
        conn.close()


def _copy_checked(root: Path, dest_root: Path, relpath: str, digest: str) -> bool:
    """Copy root/relpath to dest_root/relpath when it is inside both and has the recorded sha256."""
    try:
        src_file = contained(root, relpath)
        target = contained(dest_root, relpath)
    except ArtifactOutsideStore:
        return False
    try:
        copy_private(src_file, target)
    except FileNotFoundError:
        return False
    if sha256_file(target) != digest:  # changed behind genforge's back: not a faithful copy
        target.unlink()
        return False
    return True


def _copy_db(source: Path, target: Path) -> None:
    """SQLite's online backup API: page by page, consistent even while another process writes."""
    private_file(target)  # SQLite would create it 0644
    src = sqlite3.connect(source, timeout=30)
    dst = sqlite3.connect(target)
    try:
        with dst:
            src.backup(dst)
    finally:
        src.close()
        dst.close()


def backup(settings: Settings, dest: Path) -> dict:
    """Write a consistent copy of the database, its artifacts and the signing keystore into `dest` (new or empty).
    An artifact path that leads outside the artifact dir is neither read nor written: it is listed as missing."""
    source = _sqlite_path(settings)
    if not source.is_file():
        raise InvalidRequest(f"there is no database at {source}", hint="Check GENFORGE_DATA_DIR.")
    if not _empty(dest):
        raise InvalidRequest(f"{dest} is not empty", field="dest", hint="Back up into a new or empty directory.")
    private_dir(dest)
    db_copy = dest / DB_NAME
    try:
        _copy_db(source, db_copy)
    except sqlite3.Error as exc:
        raise StorageFailed(f"the database backup failed: {exc}", hint="Check free space at the destination.") from exc
    copied, missing = 0, []
    for relpath, digest, _size in _artifact_paths(db_copy):
        if _copy_checked(settings.artifacts_dir, dest / "artifacts", relpath, digest):
            copied += 1
        else:
            missing.append(relpath)
    uploads = 0
    for relpath, digest in _upload_paths(db_copy):
        if _copy_checked(settings.uploads_dir, dest / "uploads", relpath, digest):
            uploads += 1
        else:
            missing.append(f"uploads/{relpath}")
    keystore = Credentials(settings.data_dir).keystore
    has_keystore = keystore.is_file()
    if has_keystore:
        copy_private(keystore, dest / KEYSTORE)
    manifest = {
        "created_at": datetime.now(UTC).isoformat(),
        "database": DB_NAME,
        "artifacts": copied,
        "uploads": uploads,
        "missing": missing,
        "credentials": KEYSTORE if has_keystore else None,
    }
    with open_private(dest / MANIFEST, "w") as f:
        f.write(json.dumps(manifest, indent=2) + "\n")
    return manifest


def _check_backup(src: Path, artifacts_dir: Path) -> None:
    """A backup may be crafted or damaged: every artifact path its records name must stay inside the artifact
    dir, and its artifacts folder must hold plain files only (a link would be copied as what it points to)."""
    try:
        rows = _artifact_paths(src / DB_NAME)
    except sqlite3.Error as exc:
        raise InvalidRequest(f"{src / DB_NAME} is not a genforge database: {exc}", field="src") from None
    outside = []
    for relpath, _digest, _size in rows:
        try:
            contained(artifacts_dir, relpath)
        except ArtifactOutsideStore:
            outside.append(relpath)
    if outside:
        raise ArtifactOutsideStore(
            f"the backup at {src} has {len(outside)} record(s) whose artifact path leads outside the artifact "
            f"directory (e.g. {outside[0]!r}); nothing was restored",
            field="src",
            hint="Restore only backups made by `genforge backup`; this one was altered.",
        )
    for folder in (src / "artifacts", src / "credentials"):
        if not folder.exists() and not folder.is_symlink():
            continue
        for path in (folder, *folder.rglob("*")):
            if path.is_symlink() or not (path.is_file() or path.is_dir()):
                raise InvalidRequest(
                    f"the backup at {src} holds {path.relative_to(src)}, which is not a plain file; nothing was "
                    "restored",
                    field="src",
                    hint="Restore only backups made by `genforge backup`; this one was altered.",
                )


def restore(settings: Settings, src: Path) -> dict:
    """Put the backup at `src` into the configured data dir and artifact dir, which must both be empty."""
    target_db = _sqlite_path(settings)
    if not (src / DB_NAME).is_file():
        raise InvalidRequest(f"{src} holds no genforge backup ({DB_NAME} is missing)", field="src")
    data_dir, artifacts_dir = settings.data_dir, settings.artifacts_dir
    if not _empty(data_dir) or target_db.exists():
        raise InvalidRequest(
            f"the data directory {data_dir} is not empty",
            field="data_dir",
            hint="Restore into an empty directory (set GENFORGE_DATA_DIR), so nothing is overwritten.",
        )
    if not _empty(artifacts_dir):  # a separate GENFORGE_ARTIFACT_DIR: its files belong to another database
        raise InvalidRequest(
            f"the artifact directory {artifacts_dir} is not empty",
            field="artifact_dir",
            hint="Restore into an empty GENFORGE_ARTIFACT_DIR: the restored server would take the files already "
            "there, which its database does not know, for orphans and remove them.",
        )
    _check_backup(src, artifacts_dir)
    private_dir(data_dir)
    private_dir(target_db.parent)
    _copy_db(src / DB_NAME, target_db)
    files = 0
    if (src / "artifacts").is_dir():
        for path in sorted((src / "artifacts").rglob("*")):
            if path.is_file():
                copy_private(path, artifacts_dir / path.relative_to(src / "artifacts"))
                files += 1
    uploads = 0
    if (src / "uploads").is_dir():
        for path in sorted((src / "uploads").rglob("*")):
            if path.is_file():
                copy_private(path, contained(settings.uploads_dir, path.relative_to(src / "uploads").as_posix()))
                uploads += 1
    keystore = src / KEYSTORE
    if keystore.is_file():
        copy_private(keystore, Credentials(data_dir).keystore)
    os.sync()
    return {"database": str(target_db), "artifacts": files, "uploads": uploads, "credentials": keystore.is_file()}


def check_artifact(
    content_id: str, relpath: str | None, sha256: str | None, size: int | None, root: Path
) -> Problem | None:
    """What is wrong with a succeeded record's file, re-hashed now (None: intact). `genforge audit` (core/audit.py)
    asks it of every succeeded record."""
    recorded = f"sha256 {sha256}, {size} bytes"
    if not relpath:
        return Problem(content_id, "artifact_lost", "the record is succeeded but names no artifact file")
    try:
        path = contained(root, relpath)
    except ArtifactOutsideStore as exc:  # never hashed: it is not the store's file
        return Problem(content_id, exc.code, f"{exc.message} ({root}); it is not served")
    if not path.is_file():
        return Problem(content_id, "artifact_lost", f"the artifact file {relpath} ({recorded}) is missing")
    found_size = path.stat().st_size
    digest = sha256_file(path)
    if found_size != size or digest != sha256:
        return Problem(
            content_id,
            "artifact_changed",
            f"the artifact file {relpath} changed: recorded {recorded}, found sha256 {digest}, {found_size} bytes",
        )
    return None
