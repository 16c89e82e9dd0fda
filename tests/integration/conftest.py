"""The integration suite runs every test on both stores: the embedded SQLite file and PostgreSQL."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests import postgres as pg

BACKENDS = ["sqlite", "postgresql"] if pg.enabled() else ["sqlite"]


@pytest.fixture(params=BACKENDS)
def db_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite+aiosqlite:///{tmp_path / 'chatpush.db'}"
    url: str = request.getfixturevalue("pg_url")
    return url
