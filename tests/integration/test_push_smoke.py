from collections.abc import Callable
from typing import Any

from chatpush.api.keys import DISPATCHER
from chatpush.testing import FakeClock
from tests.conftest import ChatDriver
from tests.receivers import RELIABLE_PUSH, Receiver

PUSH = RELIABLE_PUSH


async def test_trigger_resend_and_ack(
    make_settings: Callable[..., Any],
    make_client: Callable[..., Any],
    receiver: Receiver,
    clock: FakeClock,
) -> None:
    settings = make_settings(
        groups={"g1": {"default": True, "nodes": ["n1"], "customhttp.url": receiver.url}},
        services={"default": {"flex-push-resend-delay": 15, "flex-push-resend-attempts": 2}},
    )
    client = await make_client(settings)
    dispatcher = client.app[DISPATCHER]
    chat = ChatDriver(client)
    await chat.request_chat(**PUSH)
    agent = await chat.agent_joins()
    await chat.agent_says(agent, "hello")
    await dispatcher.settle()
    assert receiver.triggers() == [("2", "0")]
    clock.advance(15)
    await dispatcher.settle()
    assert receiver.triggers() == [("2", "0"), ("2", "1")]
    await chat.op("refresh", transcriptPosition="2")
    clock.advance(60)
    await dispatcher.settle()
    assert receiver.triggers() == [("2", "0"), ("2", "1")]
    sub = await chat.api("GET", f"/chats/{chat.chat_id}/subscription")
    assert sub["outstandingTrigger"] is None and sub["acknowledgedPosition"] == 3
    trail = await chat.api("GET", f"/chats/{chat.chat_id}/deliveries")
    assert [d["outcome"] for d in trail["deliveries"]] == ["sent", "sent"]
