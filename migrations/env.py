"""Alembic environment for the costkit ledger.

costkit calls Alembic in code (``costkit.ledger.migrate``) and hands this file an
open connection that already holds the migration lock and a transaction; the
migrations then run inside that transaction. Run by the ``alembic`` command
instead, it opens its own connection from ``sqlalchemy.url`` (or ``COSTKIT_DB_URL``).
"""

from __future__ import annotations

from alembic import context
from sqlalchemy.engine import Connection

from costkit.ledger.schema import VERSION_TABLE, Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        render_as_batch=connection.dialect.name == "sqlite",
    )


def run_migrations_offline() -> None:
    from costkit.ledger.location import resolve_url

    context.configure(
        url=resolve_url(config.get_main_option("sqlalchemy.url")),
        target_metadata=target_metadata,
        version_table=VERSION_TABLE,
        literal_binds=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _configure(connection)
        with context.begin_transaction():
            context.run_migrations()
        return
    from costkit.ledger.engine import make_engine
    from costkit.ledger.location import resolve_url

    engine = make_engine(resolve_url(config.get_main_option("sqlalchemy.url")))
    try:
        with engine.begin() as own_connection:
            _configure(own_connection)
            with context.begin_transaction():
                context.run_migrations()
    finally:
        engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
