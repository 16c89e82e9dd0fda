"""Running the Alembic revisions from code, for ``chatpush migrate``, ``serve`` and ``check``."""

from __future__ import annotations

from importlib import resources

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.ext.asyncio import AsyncEngine

from chatpush.config import DatabaseSettings


def alembic_config(database: str | DatabaseSettings) -> Config:
    """The Alembic config for a database URL, or for the whole ``[database]`` settings."""
    if isinstance(database, str):
        database = DatabaseSettings(url=database)
    config = Config()
    config.set_main_option("script_location", str(resources.files("chatpush._migrations")))
    config.attributes["url"] = database.url
    config.attributes["database"] = database
    return config


def upgrade(database: str | DatabaseSettings, revision: str = "head") -> None:
    """Blocking: call it before the event loop starts, or through ``asyncio.to_thread``."""
    command.upgrade(alembic_config(database), revision)


def head_revision(database: str | DatabaseSettings) -> str | None:
    return ScriptDirectory.from_config(alembic_config(database)).get_current_head()


async def current_revision(engine: AsyncEngine) -> str | None:
    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
        )
