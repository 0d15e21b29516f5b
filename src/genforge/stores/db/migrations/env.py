from alembic import context
from sqlalchemy import create_engine

from genforge.errors import InvalidRequest
from genforge.stores.db.tables import Base

config = context.config
connection = config.attributes.get("connection")
if connection is not None:
    context.configure(connection=connection, target_metadata=Base.metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:  # `alembic` command line: open our own connection
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise InvalidRequest(
            "alembic: the configuration sets no sqlalchemy.url",
            field="sqlalchemy.url",
            hint="Set sqlalchemy.url in alembic.ini, or let genforge migrate its own database (it does on start).",
        )
    with create_engine(url).connect() as conn:
        context.configure(connection=conn, target_metadata=Base.metadata, render_as_batch=True)
        with context.begin_transaction():
            context.run_migrations()
