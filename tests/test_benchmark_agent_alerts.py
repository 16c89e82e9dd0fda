"""benchmarks/agent_alerts.py runs end to end at a tiny size (the code path, not speed)."""

from __future__ import annotations

from tests.test_benchmarks_smoke import run_benchmark


def test_agent_alerts_smoke_prints_the_machine_and_both_figures() -> None:
    output = run_benchmark("benchmarks.agent_alerts")
    assert output.startswith("machine: cores ")
    assert "100 events at 50/s offered" in output
    assert "0 refused, 100 with both devices rung" in output
    for line in ("sent -> answered", "sent -> APNs", "sent -> FCM", "sent -> both devices rung"):
        assert line in output
    assert "p99" in output


def test_agent_alerts_stalls_prints_what_chatpush_stood_still_for() -> None:
    """--stalls: chatpush under benchmarks/launch.py --stalls, its probes' JSON read back."""
    output = run_benchmark("benchmarks.agent_alerts", "--stalls")
    assert "0 refused, 100 with both devices rung" in output
    assert "chatpush stalls (measured phase; gc threshold [50000, 10, 10]" in output
    for line in ("SQLite COMMIT:", "writer batches:", "enqueued -> taken up by the dispatcher:"):
        assert line in output
    assert "ApnsProvider.send_message: {'count': 100," in output
    assert "FcmProvider.send_message: {'count': 100," in output
    assert "this process's stalls:" in output
