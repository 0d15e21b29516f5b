"""typed params: a record's params hold exactly the parameters a client can send again

Control inputs that earlier versions kept in `params` (a chat's `messages`, `raw` continuation, speech's
`fallback_reason`) move to the record's `extra`, where their typed record fields read them.

Revision ID: 0005
Revises: 0001
"""

import sqlalchemy as sa
from alembic import op

revision = "0005"
down_revision = "0001"
branch_labels = None
depends_on = None

CONTROLS = ("messages", "raw", "fallback_reason")


def upgrade() -> None:
    content = sa.table("content", sa.column("id", sa.String), sa.column("params", sa.JSON), sa.column("extra", sa.JSON))
    conn = op.get_bind()
    for row in conn.execute(sa.select(content.c.id, content.c.params, content.c.extra)).fetchall():
        params = dict(row.params or {})
        moved = {k: params.pop(k) for k in CONTROLS if k in params}
        if moved:
            extra = {**(row.extra or {}), **moved}
            conn.execute(content.update().where(content.c.id == row.id).values(params=params, extra=extra))


def downgrade() -> None:
    content = sa.table("content", sa.column("id", sa.String), sa.column("params", sa.JSON), sa.column("extra", sa.JSON))
    conn = op.get_bind()
    for row in conn.execute(sa.select(content.c.id, content.c.params, content.c.extra)).fetchall():
        extra = dict(row.extra or {})
        moved = {k: extra.pop(k) for k in CONTROLS if k in extra}
        if moved:
            params = {**(row.params or {}), **moved}
            conn.execute(content.update().where(content.c.id == row.id).values(params=params, extra=extra))
