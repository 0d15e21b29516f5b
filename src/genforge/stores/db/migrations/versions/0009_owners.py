"""owners: posts, batches and personas belong to the key that made them; shared personas; a record's run number

Revision ID: 0009
Revises: 0008
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Plain ADD COLUMNs (no batch mode): SQLite adds them in place, so content keeps its rowids and FTS triggers.
    op.add_column("posts", sa.Column("owner", sa.String(32)))
    op.create_index("ix_posts_owner", "posts", ["owner"])
    op.add_column("batches", sa.Column("owner", sa.String(32)))
    op.add_column("personas", sa.Column("owner", sa.String(32)))
    op.add_column("personas", sa.Column("shared", sa.Boolean(), nullable=False, server_default=sa.false()))
    # How many times the record was taken to run (pending -> running): a worker's success counts only for its run.
    op.add_column("content", sa.Column("runs", sa.Integer(), nullable=False, server_default="0"))


def downgrade() -> None:
    op.drop_column("content", "runs")
    op.drop_column("personas", "shared")
    op.drop_column("personas", "owner")
    op.drop_column("batches", "owner")
    op.drop_index("ix_posts_owner", "posts")
    op.drop_column("posts", "owner")
