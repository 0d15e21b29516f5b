"""scale out: remote models (served by an OpenAI-compatible server) in the models table

Revision ID: 0007
Revises: 0005
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0004"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("served_model", sa.String(200)))
        batch.add_column(sa.Column("api_key_env", sa.String(100)))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("api_key_env")
        batch.drop_column("served_model")
