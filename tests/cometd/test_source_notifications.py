"""Device type ``comet`` for a notification no chat made (issue 14): published on the
destination's device channel with the default rendering, to bridges only (a chat's own client
reads only its chat's notifications)."""

from __future__ import annotations

import asyncio

import pytest

from chatpush.api.keys import DATABASE
from chatpush.delivery import Destination, NewNotification, enqueue
from chatpush.store import trail
from chatpush.testing import FakeClock
from tests.cometd.test_comet_device import AppClient, app, bayeux, comet_chat, receive, settle
from tests.conftest import API_KEY

__all__ = ["app"]  # the fixture, shared with test_comet_device

pytestmark = [pytest.mark.filterwarnings("ignore::DeprecationWarning")]


async def test_a_bridge_gets_another_sources_notification_and_a_chat_client_does_not(
    app: AppClient, clock: FakeClock
) -> None:
    chat = await comet_chat(app, "phone-7")
    await settle(app)
    own_ext = {"chatId": chat.chat_id, "secureKey": chat.secure_key}
    async with bayeux(app, {"apiKey": API_KEY}) as bridge, bayeux(app, own_ext) as own:
        await bridge.subscribe("/_genesys/push/phone-7")
        await own.subscribe("/_genesys/push/phone-7")
        notification = NewNotification(
            "test", "ring-1", "alert", {"ring": True}, Destination("comet", "phone-7", "g1")
        )
        [message_id] = await app.app[DATABASE].write(enqueue, [notification], clock.now_ms())
        await settle(app)
        published = await receive(bridge)
        assert published["channel"] == "/_genesys/push/phone-7"
        assert published["data"] == {
            "message": {"ring": True},
            "id": message_id,
            "tag": "test.ring-1",
        }
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.5):
                await own.receive()


async def test_a_device_id_that_cannot_name_a_channel_fails_permanently(
    app: AppClient, clock: FakeClock
) -> None:
    notification = NewNotification(
        "test", "k", "alert", {}, Destination("comet", "a/b", "g1"), max_attempts=3
    )
    await app.app[DATABASE].write(enqueue, [notification], clock.now_ms())
    await settle(app)
    [(_, row)] = await app.app[DATABASE].read(trail.deliveries_of, "test", "k")
    assert (row.outcome, row.failure) == ("failed", "permanent")
