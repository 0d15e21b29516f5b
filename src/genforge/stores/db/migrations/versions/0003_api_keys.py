"""API keys, and the key that created each record

Revision ID: 0003
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "api_keys",
        sa.Column("id", sa.String(32), primary_key=True),
        sa.Column("name", sa.String(100), nullable=False),
        sa.Column("token_sha256", sa.String(64), nullable=False),
        sa.Column("scope", sa.String(16), nullable=False),
        sa.Column("models", sa.JSON),
        sa.Column("rate_count", sa.Integer),
        sa.Column("rate_period_s", sa.Float),
        sa.Column("max_jobs", sa.Integer),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("revoked_at", sa.DateTime(timezone=True)),
    )
    op.create_index("ix_api_keys_name", "api_keys", ["name"])
    op.add_column("content", sa.Column("owner", sa.String(32)))  # a plain ALTER TABLE: no table copy
    op.create_index("ix_content_owner", "content", ["owner"])


def downgrade() -> None:
    op.drop_index("ix_content_owner", "content")
    with op.batch_alter_table("content") as batch:
        batch.drop_column("owner")
    op.drop_index("ix_api_keys_name", "api_keys")
    op.drop_table("api_keys")
