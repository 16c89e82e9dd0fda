"""Benchmarks 2 (backlog) and 3 (timers) at smoke size: the code path and the table, not speed.

Each runs as a subprocess, as docs/PERFORMANCE.md tells a person to run it (about 22 s and 17 s
here); the timeouts only bound a run that hangs.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_smoke(script: str, timeout_s: float) -> str:
    result = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / script), "--smoke"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout_s,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def row(output: str, label: str) -> list[str]:
    """The cells of the Markdown table row whose first cell is ``label``."""
    for line in output.splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")]
        if line.startswith("|") and cells[0] == label:
            return cells
    raise AssertionError(f"no row {label!r} in:\n{output}")


def test_backlog_smoke_delivers_every_notification_in_order_in_every_release_mode() -> None:
    output = run_smoke("backlog.py", 90)
    assert "Benchmark 2: backlog delivery" in output
    for label, expected in (
        ("chatpush, release by activity", "40"),  # 10 chats x (agent joins + 3 messages)
        ("chatpush, release by restart", "40"),
        ("chatpush, live sends", "30"),  # 10 chats x 3 customer sends, while delivering
    ):
        cells = row(output, label)
        notifications, seconds, rate, ratio, missing, duplicates, reordered = cells[1:8]
        assert notifications == expected
        assert float(seconds) > 0 and float(rate) > 0 and ratio.endswith("x")
        assert (missing, duplicates, reordered) == ("0", "0", "0")
        chatpush_cpu, cpu_ms_per_notification = cells[8:10]
        assert re.fullmatch(r"\d+%", chatpush_cpu) and float(cpu_ms_per_notification) > 0
    sequential = [line for line in output.splitlines() if "| sequential sender (GMS model)" in line]
    assert [row(line, "sequential sender (GMS model)")[1] for line in sequential] == [
        "40",
        "40",
        "30",
    ]
    assert output.count("order and completeness: verified") == 3
    # The node's return alone released nothing: only the chats' activity did (GMS behaviour).
    assert "delivered after undrain, before any activity: 0 (expected 0)" in output


def test_timers_smoke_fires_every_timer_and_rearms_after_a_restart() -> None:
    output = run_smoke("timers.py", 90)
    assert "Benchmark 3: timers at scale" in output
    assert row(output, "resends delivered / missing / duplicates")[1] == "1000 / 0 / 0"
    lateness = row(output, "lateness, on schedule (all but catch-up) (n=" + _count(output) + ")")
    assert re.fullmatch(r"p50 [\d.]+ s, p99 [\d.]+ s, max [\d.]+ s", lateness[1])
    assert re.fullmatch(r"\d+ MB", row(output, "peak RSS of chatpush (VmHWM)")[1])
    assert re.search(r"\| restart: re-arm \(spawn until the \d+ overdue resends are out\)", output)
    assert re.fullmatch(r"[\d.]+ s", row(output, "restart: spawn until /readyz")[1])


def _count(output: str) -> str:
    match = re.search(r"lateness, on schedule \(all but catch-up\) \(n=(\d+)\)", output)
    assert match, output
    return match.group(1)
