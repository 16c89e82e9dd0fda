"""The tests' own database set-up (tests/conftest.py): each test's SQLite file is a private copy
of one migrated template, at head; ``CHATPUSH_TEST_POSTGRES=off`` skips what needs PostgreSQL,
saying so, instead of erroring at set-up."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import stat
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url

from chatpush.config import Settings
from chatpush.store import migrate

ROOT = Path(__file__).resolve().parents[1]
NEEDS_POSTGRES = [
    "tests/integration/test_instances.py",
    "tests/integration/test_postgres_refusals.py",
    "tests/fault/test_multi_instance.py",
]


def _file_state(path: Path) -> tuple[bool, int, int]:
    """(exists, permission bits, chats in it)."""
    if not path.exists():
        return False, 0, 0
    with contextlib.closing(sqlite3.connect(path)) as conn:
        chats = conn.execute("SELECT count(*) FROM chats").fetchone()[0]
    return True, stat.S_IMODE(path.stat().st_mode), chats


async def test_each_test_gets_a_private_sqlite_file_at_head(
    make_client: Callable[[Settings], Any], settings: Settings, sqlite_template: Path
) -> None:
    path = Path(make_url(settings.database.url).database or "")
    assert _file_state(path) == (False, 0, 0)
    client = await make_client(settings)
    assert migrate.sqlite_at_head(settings.database)
    response = await client.post("/genesys/2/chat/support", data={"nickname": "Ann"})
    assert response.status == 200
    assert _file_state(path) == (True, 0o600, 1)
    assert _file_state(sqlite_template)[2] == 0  # the copy is the test's own


def test_postgres_off_skips_with_the_reason_and_no_setup_error(tmp_path: Path) -> None:
    env = {**os.environ, "CHATPUSH_TEST_POSTGRES": "off"}
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-n", "0", "-q", "-rs", "-p", "no:cacheprovider",
         f"--basetemp={tmp_path / 'inner'}", *NEEDS_POSTGRES],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    summary = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-3000:]
    assert "error" not in summary and "passed" not in summary and "skipped" in summary, summary
    assert "PostgreSQL left out: CHATPUSH_TEST_POSTGRES=off" in done.stdout
    assert "set CHATPUSH_TEST_POSTGRES=off" not in done.stdout
