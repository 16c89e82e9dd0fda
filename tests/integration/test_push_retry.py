"""A transaction that PostgreSQL makes run again is counted once (real PostgreSQL, real pipeline).

``Database.write`` runs a transaction function again after a serialization failure or a deadlock
(``PG_RETRIES``). What the push pipeline decides inside it is rolled back with the first run, so
its metrics and logs must come after the commit, from the run that committed. Here the first run
of a transaction fails with a real serialization failure raised by the server after the pipeline
persisted its decision.
"""

from __future__ import annotations

import logging
import re
from collections.abc import AsyncIterator
from typing import Any

import pytest
from sqlalchemy.engine import Connection

from chatpush.chat.model import EventRecord
from chatpush.chat.service import ChatService
from chatpush.config import load_settings
from chatpush.metrics import Metrics
from chatpush.push.pipeline import PipelineTransaction, PushPipeline, Report
from chatpush.store.database import Database
from chatpush.testing import FakeClock
from tests.postgres import enabled

pytestmark = pytest.mark.skipif(not enabled(), reason="CHATPUSH_TEST_POSTGRES=off")

SERIALIZATION_FAILURE = (
    "DO $$ BEGIN RAISE EXCEPTION 'forced by the test' USING ERRCODE = 'serialization_failure';"
    " END $$"
)
USER_DATA = {
    "GCTI_Chat_PushSubscribe": "true",
    "GCTI_GMS_PushDeviceId": "device-1",
    "GCTI_GMS_PushDeviceType": "customhttp",
    "GCTI_GMS_PushResend": "true",
}


class FailsOnce(PushPipeline):
    """The real pipeline, whose next transaction (armed by ``fail_next``) fails once after it
    persisted its decision."""

    armed = False
    runs = 0

    def fail_next(self) -> None:
        self.armed, self.runs = True, 0

    def fail_if_armed(self, conn: Connection) -> None:
        self.runs += 1
        if self.armed:
            self.armed = False
            conn.exec_driver_sql(SERIALIZATION_FAILURE)

    def transaction(self, conn: Connection) -> PipelineTransaction:
        return _FailingTransaction(self, conn)

    def _fire_timers(self, conn: Connection, now_ms: int) -> tuple[int, Report]:
        fired = super()._fire_timers(conn, now_ms)
        self.fail_if_armed(conn)
        return fired


class _FailingTransaction(PipelineTransaction):
    def __init__(self, pipeline: FailsOnce, conn: Connection) -> None:
        super().__init__(pipeline, conn)
        self._failing, self._connection = pipeline, conn

    def flush(self) -> None:
        super().flush()
        self._failing.fail_if_armed(self._connection)


@pytest.fixture
async def service(
    pg_url: str, clock: FakeClock
) -> AsyncIterator[tuple[ChatService, FailsOnce, Metrics]]:
    settings = load_settings(
        None,
        database={"url": pg_url},
        groups={"g1": {"default": True, "nodes": ["n1"], "customhttp.url": "http://127.0.0.1:9"}},
        services={"default": {"flex-push-resend-delay": 15, "flex-push-resend-attempts": 3}},
    )
    db = Database(settings.database)
    metrics = Metrics()
    pipeline = FailsOnce(db, settings, clock, metrics)
    await pipeline.start()
    yield ChatService(db, settings, clock, push=pipeline), pipeline, metrics
    await db.close()


async def outbox_kinds(pipeline: FailsOnce) -> list[Any]:
    def read(conn: Connection) -> list[Any]:
        return [row[0] for row in conn.exec_driver_sql("SELECT kind FROM outbox ORDER BY id")]

    return await pipeline._db.read(read)


async def test_a_retried_transaction_counts_its_trigger_once(
    service: tuple[ChatService, FailsOnce, Metrics], caplog: pytest.LogCaptureFixture
) -> None:
    chats, pipeline, metrics = service
    caplog.set_level(logging.INFO, "chatpush.store")
    reply = await chats.request_chat(
        "support",
        nickname="Ann",
        first_name=None,
        last_name=None,
        subject=None,
        email_address=None,
        user_data=USER_DATA,
    )
    pipeline.fail_next()
    _party, event = await chats.add_party(reply.chat.id, party_type="Agent", nickname="Bob")
    assert isinstance(event, EventRecord) and pipeline.runs == 2  # PostgreSQL ran it twice
    assert await outbox_kinds(pipeline) == ["trigger"]
    assert metrics.value("chatpush_notifications_enqueued_total", kind="trigger") == 1

    # The timer batch: its resend is counted once too.
    assert isinstance(pipeline._clock, FakeClock)
    pipeline._clock.advance(15)
    pipeline.fail_next()
    assert await pipeline.fire_due_timers() == 1
    assert pipeline.runs == 2
    assert metrics.value("chatpush_triggers_resent_total") == 1
    assert metrics.value("chatpush_notifications_enqueued_total", kind="trigger") == 2
    assert re.findall("transaction retried", caplog.text) == ["transaction retried"] * 2
