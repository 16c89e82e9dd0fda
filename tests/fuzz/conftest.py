"""Reports how many cases the fuzz tests sent (and writes them to CHATPUSH_FUZZ_REPORT)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from tests.fuzz.common import COUNTS, EXAMPLES, NOTES


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not COUNTS:
        return
    write = terminalreporter.write_line
    terminalreporter.section("fuzz cases")
    for name, outcomes in sorted(COUNTS.items()):
        detail = ", ".join(f"{status}: {n}" for status, n in sorted(outcomes.items()))
        write(f"{outcomes.total():8d}  {name}  ({detail})")
    total = sum(outcomes.total() for outcomes in COUNTS.values())
    write(f"{total:8d}  requests in all ({EXAMPLES})")
    for name, outcomes in sorted(NOTES.items()):
        detail = ", ".join(f"{outcome}: {n}" for outcome, n in outcomes.most_common())
        write(f"          {name}: {detail}")
    report = os.environ.get("CHATPUSH_FUZZ_REPORT")
    if report:
        counts = {name: dict(outcomes) for name, outcomes in COUNTS.items()}
        notes = {name: dict(outcomes) for name, outcomes in NOTES.items()}
        Path(report).write_text(
            json.dumps({"total": total, "cases": counts, "notes": notes}, indent=2) + "\n"
        )
