"""`genforge audit`: every succeeded record's artifact re-hashed; with `mark`, the broken ones end `failed`.

The check of one file is the store's (stores/backup.py check_artifact); the status change is the record store's
(`succeeded -> failed`, core/records.py), so this module writes no content row itself.
"""

from __future__ import annotations

from genforge.config import Settings
from genforge.core.records import SqlContentRecords
from genforge.errors import error_class
from genforge.stores.backup import Problem, check_artifact
from genforge.stores.db import Database

HINT = "The artifact cannot be served; generate the content again."


def audit(settings: Settings, mark: bool = False) -> tuple[int, list[Problem]]:
    """(records checked, problems)."""
    db = Database(settings.db_url)
    db.migrate()
    records = SqlContentRecords(db)
    problems: list[Problem] = []
    try:
        files = records.succeeded_files()
        for found in files:
            problem = check_artifact(
                found.content_id, found.relpath, found.sha256, found.size_bytes, settings.artifacts_dir
            )
            if problem is None:
                continue
            problems.append(problem)
            if mark:
                records.lose_file(found.content_id, error_class(problem.code)(problem.message, hint=HINT))
    finally:
        db.dispose()
    return len(files), problems
