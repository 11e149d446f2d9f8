"""Alembic environment: the URL comes from the caller's config or from capprof settings."""

from logging.config import fileConfig

from alembic import context
from sqlalchemy import Connection

from service.settings import Settings
from service.store.db import make_engine
from service.store.orm import Base

config = context.config
if config.config_file_name is not None and config.attributes.get("configure_logger", True):
    fileConfig(config.config_file_name, disable_existing_loggers=False)

target_metadata = Base.metadata


def _url() -> str:
    return config.get_main_option("sqlalchemy.url") or Settings().resolved_database_url


def run_migrations_offline() -> None:
    context.configure(url=_url(), target_metadata=target_metadata, literal_binds=True, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()


def _run(connection: Connection) -> None:
    context.configure(connection=connection, target_metadata=target_metadata, render_as_batch=True)
    with context.begin_transaction():
        if connection.dialect.name == "sqlite":
            # SQLite's batch mode rebuilds a table and renames the copy back; since SQLite 3.26 that rename fails
            # when a report view reads the table. The legacy rename leaves views alone (they name the table).
            connection.exec_driver_sql("PRAGMA legacy_alter_table = ON")
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    engine = make_engine(_url())
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
