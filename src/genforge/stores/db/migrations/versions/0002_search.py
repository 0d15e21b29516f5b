"""history search: an FTS5 index over the records' prompt and text, kept in step by triggers; indexes for the
history's filters in newest-first order

`content_fts` is an external-content FTS5 table: it stores only the index, and reads the words of
`content.prompt` and `content.text` by rowid. Three triggers keep it in step with every insert, update and
delete, so no code path can forget it. Created and backfilled here ('rebuild' indexes every existing row).

If a later migration recreates the `content` table (SQLite batch mode does for some ALTERs), the triggers go
with the old table and rowids may change: such a migration must create the triggers again and rebuild.

`(status, created_at)`, `(content_type, created_at)` and `(content_type, status, created_at)` let a filtered
history page read its 50 newest rows from an index instead of sorting every match (600 ms at 100k records
before), and count its matches from the index alone. On other databases only these indexes are
made (their full-text search is their own; see genforge/search.py).

Revision ID: 0002
Revises: 0001
"""

from alembic import op

revision = "0002"
down_revision = "0003"
branch_labels = None
depends_on = None

UPGRADE = [
    """CREATE VIRTUAL TABLE content_fts USING fts5(
         prompt, text, content='content', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2')""",
    """CREATE TRIGGER content_fts_insert AFTER INSERT ON content BEGIN
         INSERT INTO content_fts(rowid, prompt, text) VALUES (new.rowid, new.prompt, new.text);
       END""",
    """CREATE TRIGGER content_fts_delete AFTER DELETE ON content BEGIN
         INSERT INTO content_fts(content_fts, rowid, prompt, text) VALUES ('delete', old.rowid, old.prompt, old.text);
       END""",
    """CREATE TRIGGER content_fts_update AFTER UPDATE OF prompt, text ON content BEGIN
         INSERT INTO content_fts(content_fts, rowid, prompt, text) VALUES ('delete', old.rowid, old.prompt, old.text);
         INSERT INTO content_fts(rowid, prompt, text) VALUES (new.rowid, new.prompt, new.text);
       END""",
    "INSERT INTO content_fts(content_fts) VALUES ('rebuild')",
]
DOWNGRADE = [
    "DROP TRIGGER IF EXISTS content_fts_update",
    "DROP TRIGGER IF EXISTS content_fts_delete",
    "DROP TRIGGER IF EXISTS content_fts_insert",
    "DROP TABLE IF EXISTS content_fts",
]


def upgrade() -> None:
    op.create_index("ix_content_status_created", "content", ["status", "created_at"])
    op.create_index("ix_content_type_created", "content", ["content_type", "created_at"])
    op.create_index("ix_content_type_status_created", "content", ["content_type", "status", "created_at"])
    if op.get_bind().dialect.name != "sqlite":
        return
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        for statement in DOWNGRADE:
            op.execute(statement)
    op.drop_index("ix_content_type_status_created", "content")
    op.drop_index("ix_content_type_created", "content")
    op.drop_index("ix_content_status_created", "content")
