"""The throughput and latency benchmarks run end to end at a tiny size (the code path, not speed).

Each starts its own processes (receiver, null relay, ``chatpush serve``) on 127.0.0.1 and stops
them before it exits; a run takes a few seconds. The throughput run also goes through
``--instrument`` (chatpush under benchmarks/launch.py --counters), and once more with both
targets on asyncio's own loop (``--loop asyncio``; uvloop is the default), and the SQLite access
micro-benchmark of the profile runs too, and so does the APNs send's (benchmarks/apns_send.py).
The instances benchmark runs 1 then 2 chatpush processes on a fresh database of the tests'
PostgreSQL server (``CHATPUSH_TEST_POSTGRES``; skipped when that says ``off``) and drops it
again.
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests import postgres as pg

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
    assert "sender customer, loop uvloop" in output
    assert "| round | target " in output
    assert "relay" in output and "chatpush" in output
    assert "ratio chatpush/relay, end-to-end events/s:" in output
    assert "chatpush CPU per event (all its threads), ms:" in output
    assert "SQL statements" in output and "INSERT events" in output
    assert "HTTP POST /genesys/2/chat/{service}/{chat_id}/{operation}" in output


def test_apns_send_smoke_sends_through_both_clients() -> None:
    output = run_benchmark("benchmarks.apns_send")
    rows = [line for line in output.splitlines() if line.startswith("  round 1")]
    assert len(rows) == 2 and all('{"sent": 40}' in row for row in rows), output
    assert "h2 / httpx = " in output


def test_throughput_smoke_runs_both_targets_on_asyncio_with_agent_messages() -> None:
    output = run_benchmark("benchmarks.throughput", "--loop", "asyncio", "--sender", "agent")
    assert "sender agent, loop asyncio" in output
    rows = [line for line in output.splitlines() if line.startswith("|") and "yes" in line]
    assert {row.split("|")[2].strip() for row in rows} == {"relay", "chatpush"}


def test_latency_smoke_prints_percentiles_of_both_targets() -> None:
    output = run_benchmark("benchmarks.latency")
    assert "accepted->trigger p50" in output
    rows = [line for line in output.splitlines() if line.startswith("|") and "yes" in line]
    assert {row.split("|")[1].strip() for row in rows} == {"relay", "chatpush"}


def test_db_access_smoke_prices_every_variant() -> None:
    output = run_benchmark("benchmarks.db_access")
    for variant in ("async-built", "async-prebuilt", "sync-1hop", "sqlite3-1hop", "sqlite3-inline"):
        assert variant in output


@pytest.mark.skipif(not pg.enabled(), reason="CHATPUSH_TEST_POSTGRES=off")
def test_instances_smoke_runs_one_and_two_instances_and_drops_their_databases() -> None:
    output = run_benchmark("benchmarks.instances", "--postgres", pg.ADMIN_URL)
    rows = [line for line in output.splitlines() if line.startswith("|") and "yes" in line]
    assert {row.split("|")[2].strip() for row in rows} == {"1", "2"}
    assert "node-1:" in output and "node-2:" in output
    assert "ratio 2 instances / 1, end-to-end events/s:" in output
    assert "postgres (db)" in output
    line = next(ln for ln in output.splitlines() if ln.startswith("databases (each dropped"))
    used = set(line.split(": ", 1)[1].split(", "))
    assert len(used) == 2
    assert not used & set(asyncio.run(_databases()))


async def _databases() -> list[str]:
    import asyncpg  # type: ignore[import-untyped]

    conn = await asyncpg.connect(pg.ADMIN_URL)
    try:
        rows = await conn.fetch("SELECT datname FROM pg_database")
    finally:
        await conn.close()
    return [str(row["datname"]) for row in rows]


@pytest.mark.skipif(
    os.environ.get("CHATPUSH_TEST_NODE", "").lower() == "off",
    reason="CHATPUSH_TEST_NODE=off: the Node server is left out",
)
def test_cometd_smoke_measures_both_servers_with_everything_delivered() -> None:
    output = run_benchmark("benchmarks.cometd")
    rows = [line.split("|") for line in output.splitlines() if line.startswith("| ")]
    by_server = {row[1].strip(): row for row in rows[1:]}
    assert set(by_server) == {"node", "chatpush"}, output
    for row in by_server.values():
        assert row[7].strip() == "100.00" and row[8].strip() == "0", output  # delivered %, dup
    assert "p99 chatpush / node =" in output


def test_cometd_smoke_over_websocket_delivers_everything_and_compares_with_long_polling() -> None:
    # The generator refuses a handshake that does not offer websocket, so this row is websocket.
    output = run_benchmark("benchmarks.cometd", "--servers", "chatpush,chatpush-ws")
    rows = [line.split("|") for line in output.splitlines() if line.startswith("| ")]
    by_server = {row[1].strip(): row for row in rows[1:]}
    assert set(by_server) == {"chatpush", "chatpush-ws"}, output
    for row in by_server.values():
        assert row[7].strip() == "100.00" and row[8].strip() == "0", output  # delivered %, dup
    assert float(by_server["chatpush-ws"][14]) > 0, output  # connects per message
    assert "p99 chatpush-ws / chatpush =" in output


def test_cometd_chat_smoke_delivers_every_agent_event_to_its_client() -> None:
    output = run_benchmark("benchmarks.cometd_chat")
    rows = [line.split("|") for line in output.splitlines() if line.startswith("| ")]
    [row] = rows[1:]
    assert row[4].strip() == "100.00" and row[5].strip() == "0", output  # received %, dup


def test_open_callbacks_smoke_prices_every_way_of_counting() -> None:
    output = run_benchmark("benchmarks.open_callbacks")
    for name in ("IN, index", "!=, index", "IN, no index", "!=, no index"):
        assert name in output, output
