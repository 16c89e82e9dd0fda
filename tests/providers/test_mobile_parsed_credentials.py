"""Mobile providers read a credentials' PEM key once, not on every send (benchmarks/agent_alerts.py
found RSA key parsing to be most of an FCM send's CPU)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from chatpush.config import MobileSettings
from chatpush.providers.fcm import FcmCredentials, FcmProvider
from chatpush.testing import FakeClock
from chatpush.testing.fcm import FakeFcm


class Counting(FcmProvider):
    reads = 0

    @classmethod
    def read_credentials(cls, fields: Mapping[str, str]) -> FcmCredentials:
        cls.reads += 1
        return super().read_credentials(fields)


def test_credentials_are_read_once_per_content() -> None:
    clock = FakeClock()
    provider = Counting(MobileSettings(), clock, credentials=None)  # type: ignore[arg-type]
    fields: dict[str, Any] = FakeFcm(clock).credentials()
    first = provider.parse(fields)
    assert provider.parse(dict(fields)) is first and Counting.reads == 1
    changed = provider.parse({**fields, "project_id": "other-app"})
    assert changed is not first and Counting.reads == 2
    for n in range(100):  # bounded
        provider.parse({**fields, "project_id": f"app-{n}"})
    assert len(provider._parsed) <= 64
