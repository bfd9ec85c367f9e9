"""Alembic environment. Run through `confide migrate` (store/migrate.py), which passes
an open connection; importing no app models beyond the table metadata."""

from alembic import context
from sqlalchemy import Connection

from confide.store.tables import Base

config = context.config
target_metadata = Base.metadata


def run_with(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


connection = config.attributes.get("connection")
if connection is None:
    raise RuntimeError("run migrations with `confide migrate`")
run_with(connection)
