"""The schema's newest revision is known without Alembic, and a current database is opened without it."""

from __future__ import annotations

import subprocess
import sys

from alembic.script import ScriptDirectory

from genforge.stores.db.database import HEAD_REVISION, Database


def test_head_revision_is_alembics_head(tmp_path):
    db = Database(f"sqlite:///{tmp_path / 'g.db'}")
    assert ScriptDirectory.from_config(db.alembic_config()).get_current_head() == HEAD_REVISION


def test_a_new_database_is_migrated_to_the_head_and_a_current_one_needs_no_alembic(tmp_path):
    url = f"sqlite:///{tmp_path / 'g.db'}"
    db = Database(url)
    assert db.migration_state() == (None, HEAD_REVISION)
    db.migrate()
    assert db.migration_state() == (HEAD_REVISION, HEAD_REVISION)
    check = (
        "import sys; from genforge.stores.db.database import Database; db = Database(sys.argv[1]); db.migrate(); "
        "print(db.current_revision(), sorted(m for m in sys.modules if m.split('.')[0] == 'alembic'))"
    )
    out = subprocess.run([sys.executable, "-c", check, url], capture_output=True, text=True, check=True).stdout
    assert out.split() == [HEAD_REVISION, "[]"]
