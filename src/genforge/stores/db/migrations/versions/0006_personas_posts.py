"""personas, posts and variant batches; the persona a content record was made with

Revision ID: 0006
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "personas",
        sa.Column("name", sa.String(64), primary_key=True),
        sa.Column("version", sa.Integer, primary_key=True),
        sa.Column("display_name", sa.String(200)),
        sa.Column("description", sa.Text),
        sa.Column("text", sa.JSON, nullable=False),
        sa.Column("image", sa.JSON, nullable=False),
        sa.Column("speech", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    op.create_table(
        "posts",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("persona_name", sa.String(64), nullable=False, index=True),
        sa.Column("persona_version", sa.Integer, nullable=False),
        sa.Column("platform", sa.String(32), nullable=False),
        sa.Column("brief", sa.Text, nullable=False),
        sa.Column("parts", sa.JSON, nullable=False),
        sa.Column("part_ids", sa.JSON, nullable=False),
        sa.Column("error_part", sa.String(16)),
        sa.Column("error_code", sa.String(50)),
        sa.Column("error_message", sa.Text),
        sa.Column("error_hint", sa.Text),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
    )
    op.create_table(
        "batches",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("content_type", sa.String(16), nullable=False),
        sa.Column("item_ids", sa.JSON, nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
    )
    with op.batch_alter_table("content") as batch:
        batch.add_column(sa.Column("persona_name", sa.String(64)))
        batch.add_column(sa.Column("persona_version", sa.Integer))
        batch.create_index("ix_content_persona_name", ["persona_name"])


def downgrade() -> None:
    with op.batch_alter_table("content") as batch:
        batch.drop_index("ix_content_persona_name")
        batch.drop_column("persona_version")
        batch.drop_column("persona_name")
    op.drop_table("batches")
    op.drop_table("posts")
    op.drop_table("personas")
