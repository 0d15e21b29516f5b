"""Is a record's stored artifact still the one it recorded? Re-hash the file and compare."""

from __future__ import annotations

from genforge.db import ContentRow
from genforge.errors import Conflict, NotFound
from genforge.storage import sha256_file


def verify_artifact(svc, content_id: str) -> dict:
    """{"intact": bool, ...}: the file exists and its sha256 and size are the recorded ones."""
    with svc.db.session() as s:
        row = s.get(ContentRow, content_id)
        if row is None:
            raise NotFound(f"no content with id {content_id!r}", field="id")
        if not row.artifact_path:
            raise Conflict(
                f"content {content_id} has no artifact to verify (status {row.status})",
                content_id=content_id,
                hint="Only succeeded records have a file.",
            )
        relpath, expected_sha, expected_size = row.artifact_path, row.artifact_sha256, row.artifact_size
    path = svc.store.resolve(relpath)
    report = {"id": content_id, "expected_sha256": expected_sha, "expected_size_bytes": expected_size}
    if not path.is_file():
        return {**report, "intact": False, "sha256": None, "size_bytes": None, "detail": "the file is missing"}
    actual_sha, actual_size = sha256_file(path), path.stat().st_size
    intact = actual_sha == expected_sha and actual_size == expected_size
    detail = "the file's sha256 and size are the recorded ones" if intact else "the file differs from the record"
    return {**report, "intact": intact, "sha256": actual_sha, "size_bytes": actual_size, "detail": detail}
