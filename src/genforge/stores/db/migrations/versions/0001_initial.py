"""initial schema: content records and registered models

Revision ID: 0001
Revises:
"""

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "content",
        sa.Column("id", sa.String(36), primary_key=True),
        sa.Column("content_type", sa.String(16), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("prompt", sa.Text, nullable=False),
        sa.Column("system", sa.Text),
        sa.Column("quality", sa.String(16), nullable=False),
        sa.Column("params", sa.JSON, nullable=False),
        sa.Column("model_name", sa.String(200)),
        sa.Column("model_engine", sa.String(50)),
        sa.Column("engine_version", sa.String(50)),
        sa.Column("model_sha256", sa.String(64)),
        sa.Column("text", sa.Text),
        sa.Column("finish_reason", sa.String(16)),
        sa.Column("prompt_tokens", sa.Integer),
        sa.Column("completion_tokens", sa.Integer),
        sa.Column("extra", sa.JSON, nullable=False),
        sa.Column("artifact_sha256", sa.String(64)),
        sa.Column("artifact_size", sa.BigInteger),
        sa.Column("artifact_media_type", sa.String(50)),
        sa.Column("artifact_path", sa.Text),
        sa.Column("load_ms", sa.Float),
        sa.Column("generate_ms", sa.Float),
        sa.Column("total_ms", sa.Float),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True)),
        sa.Column("finished_at", sa.DateTime(timezone=True)),
        sa.Column("error_code", sa.String(50)),
        sa.Column("error_message", sa.Text),
        sa.Column("error_hint", sa.Text),
    )
    op.create_index("ix_content_created", "content", ["created_at"])
    op.create_index("ix_content_status", "content", ["status"])
    op.create_index("ix_content_artifact_sha256", "content", ["artifact_sha256"])
    op.create_table(
        "models",
        sa.Column("name", sa.String(200), primary_key=True),
        sa.Column("content_type", sa.String(16), nullable=False),
        sa.Column("engine", sa.String(50), nullable=False),
        sa.Column("source", sa.String(16), nullable=False),
        sa.Column("path", sa.Text, nullable=False),
        sa.Column("sha256", sa.String(64), nullable=False),
        sa.Column("size_bytes", sa.BigInteger, nullable=False),
        sa.Column("mtime_ns", sa.BigInteger, nullable=False),
        sa.Column("added_at", sa.DateTime(timezone=True), nullable=False),
    )


def downgrade() -> None:
    op.drop_table("models")
    op.drop_index("ix_content_artifact_sha256", "content")
    op.drop_index("ix_content_status", "content")
    op.drop_index("ix_content_created", "content")
    op.drop_table("content")
