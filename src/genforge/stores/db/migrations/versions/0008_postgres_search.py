"""PostgreSQL: history search (a generated tsvector column over the records' prompt and text, with a GIN index),
and room for engine versions

The PostgreSQL counterpart of migration 0002's FTS5 index (which is SQLite only; this one does nothing on
SQLite). `content.search_tsv` is GENERATED ALWAYS ... STORED, so PostgreSQL computes it on every insert and
update of `prompt` or `text` (no trigger, no code path can forget it), and adding the column computes it for
every existing row (the backfill).

The text search configuration `genforge_search` is 'simple' (lower-case, no stemming, no stop words: the words
as FTS5's unicode61 tokeniser finds them, so `q=` finds the same records on both databases; an English stemmer
would make "running" match "run" here and not there) with `unaccent` in front, as FTS5's `remove_diacritics`
folds accents. `unaccent` ships with PostgreSQL (contrib) and is a trusted extension (PostgreSQL 13+): the
database's owner may create it.

The prompt is weight A and the text weight B: FTS5 matches a "phrase" within one column, and genforge/search.py
asks for a phrase as all-A or all-B, so the prompt's last word and the text's first word never make a phrase.

`content.engine_version` grows from 50 to 200 characters: PostgreSQL enforces a VARCHAR's length (SQLite does
not), and OpenVINO's version strings are longer than 50 ("openvino 2026.4.1-22982-e213a147257-releases/2026/4"),
which failed every portrait image on PostgreSQL.

Revision ID: 0008
Revises: 0006
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0006"
branch_labels = None
depends_on = None

UPGRADE = [
    "CREATE EXTENSION IF NOT EXISTS unaccent",
    "CREATE TEXT SEARCH CONFIGURATION genforge_search (COPY = pg_catalog.simple)",
    """ALTER TEXT SEARCH CONFIGURATION genforge_search
         ALTER MAPPING FOR word, hword, hword_part, asciiword, asciihword, hword_asciipart WITH unaccent, simple""",
    """ALTER TABLE content ADD COLUMN search_tsv tsvector GENERATED ALWAYS AS (
         setweight(to_tsvector('genforge_search'::regconfig, coalesce(prompt, '')), 'A')
         || setweight(to_tsvector('genforge_search'::regconfig, coalesce(text, '')), 'B')) STORED""",
    "CREATE INDEX ix_content_search ON content USING GIN (search_tsv)",
]
DOWNGRADE = [
    "DROP INDEX IF EXISTS ix_content_search",
    "ALTER TABLE content DROP COLUMN IF EXISTS search_tsv",
    "DROP TEXT SEARCH CONFIGURATION IF EXISTS genforge_search",
]


def upgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    op.alter_column("content", "engine_version", type_=sa.String(200), existing_type=sa.String(50))
    for statement in UPGRADE:
        op.execute(statement)


def downgrade() -> None:
    if op.get_bind().dialect.name != "postgresql":
        return
    for statement in DOWNGRADE:
        op.execute(statement)
    op.alter_column("content", "engine_version", type_=sa.String(50), existing_type=sa.String(200))
