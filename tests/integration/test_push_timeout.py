"""flex-push-timeout: a push-subscribed chat with no client request for that long is ended."""

from collections.abc import Callable
from typing import Any

from chatpush.api.keys import CHATS, DISPATCHER, METRICS
from chatpush.chat.housekeeping import end_idle_push_chats
from chatpush.testing import FakeClock
from tests.conftest import ChatDriver
from tests.receivers import RELIABLE_PUSH, Receiver

PUSH = RELIABLE_PUSH


async def test_idle_chat_is_ended_with_its_final_trigger(
    make_settings: Callable[..., Any],
    make_client: Callable[..., Any],
    receiver: Receiver,
    clock: FakeClock,
) -> None:
    settings = make_settings(
        groups={"g": {"default": True, "nodes": ["n1"], "customhttp.url": receiver.url}},
        services={
            "default": {"flex-push-timeout": 600},
            "patient": {"flex-push-timeout": 3600},
        },
    )
    client = await make_client(settings)
    quick, patient, plain = ChatDriver(client), ChatDriver(client, "patient"), ChatDriver(client)
    await quick.request_chat(**PUSH)
    await patient.request_chat(**PUSH)
    await plain.request_chat()  # no push subscription: never expired by flex-push-timeout

    clock.advance(599)
    await quick.op("refresh", transcriptPosition="0")  # a client request restarts the idle time
    clock.advance(599)
    assert await client.app[CHATS].expire_idle_push_chats() == 0

    clock.advance(2)
    await end_idle_push_chats(client.app[CHATS], client.app[METRICS])
    await client.app[DISPATCHER].settle()
    ended = await quick.op("refresh", transcriptPosition="0")
    assert ended["chatEnded"] is True
    assert (await patient.op("refresh", transcriptPosition="0"))["chatEnded"] is False
    assert (await plain.op("refresh", transcriptPosition="0"))["chatEnded"] is False
    [trigger] = receiver.received
    assert trigger.body["message"]["chatEnded"] is True
    assert trigger.body["message"]["messages"][0]["userData"]["notify-position"] == "2"
    assert client.app[METRICS].value("chatpush_chats_expired_total") == 1

    clock.advance(3600)
    await end_idle_push_chats(client.app[CHATS], client.app[METRICS])
    assert (await patient.op("refresh", transcriptPosition="0"))["chatEnded"] is True
