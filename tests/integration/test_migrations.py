"""The Alembic revisions build exactly the schema of the models, and walk down and up again.

Every test runs on an empty SQLite file and on an empty PostgreSQL database (postgresql+asyncpg://).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, MetaData, String, inspect, text

from chatpush.config import DatabaseSettings
from chatpush.store import migrate
from chatpush.store.database import make_engine
from chatpush.store.tables import metadata
from tests import postgres as pg
from tests.integration.conftest import BACKENDS

T = TypeVar("T")

POSTGRESQL_ONLY = {"0004"}
"""Revisions that change nothing on SQLite (its INTEGER PRIMARY KEY is 64-bit already)."""


@pytest.fixture(params=BACKENDS)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database for one test."""
    if request.param == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'migrations.db'}"
        return
    postgres: pg.Postgres = request.getfixturevalue("postgres")
    url = postgres.create_empty()
    yield url
    postgres.drop(url)


def on_database(url: str, work: Callable[[Connection], T]) -> T:
    """Run ``work`` on a plain connection to ``url`` (Alembic's comparison is synchronous)."""

    async def run() -> T:
        engine = make_engine(DatabaseSettings(url=url))
        try:
            async with engine.connect() as conn:
                return await conn.run_sync(work)
        finally:
            await engine.dispose()

    return asyncio.run(run())


def differences(url: str, target: MetaData = metadata) -> list[Any]:
    """What autogenerate would change to bring the database to ``target``: types and indexes too."""

    def compare(conn: Connection) -> list[Any]:
        context = MigrationContext.configure(
            conn, opts={"compare_type": True, "compare_server_default": True}
        )
        return list(compare_metadata(context, target))

    return on_database(url, compare)


def tables(url: str) -> set[str]:
    return on_database(url, lambda conn: set(inspect(conn).get_table_names()))


def schema(url: str) -> dict[str, Any]:
    """Tables with their columns, keys and indexes, as the database reports them."""

    def describe(conn: Connection) -> dict[str, Any]:
        inspector = inspect(conn)
        return {
            name: {
                "columns": [
                    (c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(name)
                ],
                "primary_key": inspector.get_pk_constraint(name)["constrained_columns"],
                "foreign_keys": sorted(
                    (fk["constrained_columns"], fk["referred_table"])
                    for fk in inspector.get_foreign_keys(name)
                ),
                "indexes": sorted(
                    (ix["name"], ix["column_names"], ix["unique"])
                    for ix in inspector.get_indexes(name)
                ),
            }
            for name in inspector.get_table_names()
            if name != "alembic_version"
        }

    return on_database(url, describe)


def current(url: str) -> str | None:
    return on_database(url, lambda conn: MigrationContext.configure(conn).get_current_revision())


def revisions_oldest_first(url: str) -> list[str]:
    script = ScriptDirectory.from_config(migrate.alembic_config(url))
    return [revision.revision for revision in reversed(list(script.walk_revisions()))]


def test_there_is_one_head(database_url: str) -> None:
    script = ScriptDirectory.from_config(migrate.alembic_config(database_url))
    assert len(script.get_heads()) == 1
    assert migrate.head_revision(database_url) == script.get_current_head()
    # What `chatpush serve` compares a SQLite file with before it lets Alembic look.
    assert script.get_current_head() == migrate.HEAD_REVISION


def test_serve_skips_alembic_only_for_a_sqlite_file_at_head(tmp_path: Path) -> None:
    settings = DatabaseSettings(url=f"sqlite+aiosqlite:///{tmp_path / 'a b?.db'}")
    assert not migrate.sqlite_at_head(settings)  # no file yet
    migrate.upgrade(settings, "0005")
    assert not migrate.sqlite_at_head(settings)  # behind: Alembic upgrades it
    migrate.upgrade(settings)
    assert migrate.sqlite_at_head(settings)


def test_upgrading_an_empty_database_gives_exactly_the_models(database_url: str) -> None:
    assert tables(database_url) == set()
    migrate.upgrade(database_url)
    assert current(database_url) == migrate.head_revision(database_url)
    assert tables(database_url) == set(metadata.tables) | {"alembic_version"}
    assert differences(database_url) == []


def test_the_comparison_sees_missing_indexes_and_changed_types(database_url: str) -> None:
    """Guards the test above: an empty diff must mean equal, not "nothing was compared"."""
    migrate.upgrade(database_url)
    altered = MetaData()
    for table in metadata.tables.values():
        table.to_metadata(altered)
    altered.tables["chats"].c.service_name.type = String(100)
    found = differences(database_url, altered)
    assert len(found) == 1
    assert [change[0] for change in found[0]] == ["modify_type"]  # a column diff is a list

    def drop_index(conn: Connection) -> None:
        conn.execute(text("DROP INDEX ix_chats_ended_at_ms"))
        conn.commit()

    on_database(database_url, drop_index)
    found = differences(database_url)
    assert [(diff[0], diff[1].name) for diff in found] == [("add_index", "ix_chats_ended_at_ms")]


def test_downgrade_to_base_and_upgrade_again(database_url: str) -> None:
    migrate.upgrade(database_url)
    command.downgrade(migrate.alembic_config(database_url), "base")
    assert current(database_url) is None
    assert tables(database_url) <= {"alembic_version"}
    migrate.upgrade(database_url)
    assert current(database_url) == migrate.head_revision(database_url)
    assert differences(database_url) == []


def test_every_revision_steps_down_and_up_again(database_url: str) -> None:
    """The stairway: each revision's downgrade undoes exactly what its upgrade did."""
    config = migrate.alembic_config(database_url)
    before = schema(database_url)
    for revision in revisions_oldest_first(database_url):
        command.upgrade(config, revision)
        after = schema(database_url)
        if not (revision in POSTGRESQL_ONLY and database_url.startswith("sqlite")):
            assert after != before, f"{revision} changed nothing"
        command.downgrade(config, "-1")
        assert schema(database_url) == before, f"{revision} downgrade left changes behind"
        command.upgrade(config, revision)
        assert current(database_url) == revision
        assert schema(database_url) == after
        before = after
    assert differences(database_url) == []


def test_upgrading_at_head_changes_nothing(database_url: str) -> None:
    migrate.upgrade(database_url)
    migrate.upgrade(database_url)
    assert current(database_url) == migrate.head_revision(database_url)
    assert differences(database_url) == []
