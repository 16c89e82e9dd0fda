"""Fixtures of the fault tests: every chatpush process started is stopped at teardown."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.fault.support import Chatpush


@pytest.fixture
def processes() -> Iterator[list[Chatpush]]:
    """Register each ``Chatpush`` here; teardown stops (SIGTERM, then SIGKILL) the live ones."""
    started: list[Chatpush] = []
    yield started
    for process in started:
        process.stop()
