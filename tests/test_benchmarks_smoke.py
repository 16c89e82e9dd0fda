"""The throughput and latency benchmarks run end to end at a tiny size (the code path, not speed).

Each starts its own processes (receiver, null relay, ``chatpush serve``) on 127.0.0.1 and stops
them before it exits; a run takes a few seconds. The throughput run also goes through
``--instrument`` (chatpush under benchmarks/instrumented_serve.py), and the SQLite access
micro-benchmark of the profile runs too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT_S = 60


def run_benchmark(module: str, *options: str) -> str:
    try:
        result = subprocess.run(
            [sys.executable, "-m", module, "--smoke", *options],
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=TIMEOUT_S,
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"{module} --smoke took longer than {TIMEOUT_S} s: {exc.stdout}{exc.stderr}")
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_throughput_smoke_prints_both_targets_and_the_ratio() -> None:
    output = run_benchmark("benchmarks.throughput", "--instrument")
    assert "| round | target " in output
    assert "relay" in output and "chatpush" in output
    assert "ratio chatpush/relay, end-to-end events/s:" in output
    assert "SQL statements" in output and "INSERT events" in output


def test_latency_smoke_prints_percentiles_of_both_targets() -> None:
    output = run_benchmark("benchmarks.latency")
    assert "accepted->trigger p50" in output
    rows = [line for line in output.splitlines() if line.startswith("|") and "yes" in line]
    assert {row.split("|")[1].strip() for row in rows} == {"relay", "chatpush"}


def test_db_access_smoke_prices_every_variant() -> None:
    output = run_benchmark("benchmarks.db_access")
    for variant in ("async-built", "async-prebuilt", "sync-1hop", "sqlite3-1hop", "sqlite3-inline"):
        assert variant in output
