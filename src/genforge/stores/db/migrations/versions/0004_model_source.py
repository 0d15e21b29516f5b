"""models pulled from a hub: source repository, revision (commit), file and licence

Revision ID: 0004
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0004"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.add_column(sa.Column("hub_repo", sa.String(200)))
        batch.add_column(sa.Column("hub_revision", sa.String(64)))
        batch.add_column(sa.Column("hub_file", sa.Text))
        batch.add_column(sa.Column("license", sa.Text))


def downgrade() -> None:
    with op.batch_alter_table("models") as batch:
        batch.drop_column("license")
        batch.drop_column("hub_file")
        batch.drop_column("hub_revision")
        batch.drop_column("hub_repo")
