"""Running the Alembic revisions from code, for ``chatpush migrate``, ``serve`` and ``check``.

Alembic is imported only where it is used: it is a third of ``chatpush serve``'s start-up, and a
SQLite file already at :data:`HEAD_REVISION` needs none of it (:func:`sqlite_at_head`).
"""

from __future__ import annotations

import contextlib
import sqlite3
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import AsyncEngine

from chatpush.config import DatabaseSettings

if TYPE_CHECKING:
    from alembic.config import Config

HEAD_REVISION = "0013"
"""The newest revision in migrations/versions; tests/integration/test_migrations.py checks that
Alembic finds the same head, so a new revision cannot be forgotten here."""


def alembic_config(database: str | DatabaseSettings) -> Config:
    """The Alembic config for a database URL, or for the whole ``[database]`` settings."""
    from alembic.config import Config

    if isinstance(database, str):
        database = DatabaseSettings(url=database)
    config = Config()
    config.set_main_option("script_location", str(resources.files("chatpush._migrations")))
    config.attributes["url"] = database.url
    config.attributes["database"] = database
    return config


def upgrade(database: str | DatabaseSettings, revision: str = "head") -> None:
    """Blocking: call it before the event loop starts, or through ``asyncio.to_thread``."""
    from alembic import command

    command.upgrade(alembic_config(database), revision)


def head_revision(database: str | DatabaseSettings) -> str | None:
    from alembic.script import ScriptDirectory

    return ScriptDirectory.from_config(alembic_config(database)).get_current_head()


def sqlite_at_head(database: DatabaseSettings) -> bool:
    """The SQLite file exists and is at :data:`HEAD_REVISION`, read with sqlite3 alone (False
    whenever that cannot be told: Alembic then looks, and upgrades if need be)."""
    path = make_url(database.url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return False
    file = Path(path)
    if not file.is_file():
        return False
    try:
        uri = f"{file.resolve().as_uri()}?mode=ro"
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            found = conn.execute("SELECT version_num FROM alembic_version").fetchall()
    except sqlite3.Error:
        return False
    return found == [(HEAD_REVISION,)]


async def current_revision(engine: AsyncEngine) -> str | None:
    from alembic.runtime.migration import MigrationContext

    async with engine.connect() as conn:
        return await conn.run_sync(
            lambda sync_conn: MigrationContext.configure(sync_conn).get_current_revision()
        )
