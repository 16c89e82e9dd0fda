"""Alembic environment: async engine, batch mode so ALTERs work on SQLite."""

from __future__ import annotations

import asyncio
from logging.config import fileConfig

from alembic import context
from sqlalchemy.engine import Connection

from chatpush.config import DatabaseSettings, load_settings
from chatpush.store.database import make_engine
from chatpush.store.tables import metadata

config = context.config
if config.config_file_name is not None:
    # `alembic upgrade head` reads alembic.ini: use its logging sections (chatpush has its own).
    fileConfig(config.config_file_name, disable_existing_loggers=False)


def _database_settings() -> DatabaseSettings:
    # From chatpush: the settings it already loaded (or just a URL), never a second, different read.
    database = config.attributes.get("database")
    if isinstance(database, DatabaseSettings):
        return database
    url = config.attributes.get("url")
    if url:
        return DatabaseSettings(url=url)
    # From the alembic command line: the same settings `chatpush` would read.
    return load_settings().database


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        render_as_batch=True,
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


async def _run_async() -> None:
    engine = make_engine(_database_settings())
    try:
        async with engine.connect() as connection:
            await connection.run_sync(_run)
            await connection.commit()
    finally:
        await engine.dispose()


if context.is_offline_mode():
    context.configure(url=_database_settings().url, target_metadata=metadata, render_as_batch=True)
    with context.begin_transaction():
        context.run_migrations()
else:
    asyncio.run(_run_async())
