"""benchmarks/agent_alerts.py runs end to end at a tiny size (the code path, not speed)."""

from __future__ import annotations

from tests.test_benchmarks_smoke import run_benchmark


def test_agent_alerts_smoke_prints_the_machine_and_both_figures() -> None:
    output = run_benchmark("benchmarks.agent_alerts")
    assert output.startswith("machine: cores ")
    assert "100 events at 50/s offered" in output and "200 rings queued, 0 refused" in output
    assert "sent -> rings queued:" in output and "p99" in output
    assert "sent -> answered (durable):" in output
