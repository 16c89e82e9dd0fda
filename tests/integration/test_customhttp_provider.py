"""The custom HTTP provider against receivers that fail (CONTRACT §7, §8 last paragraph, §9).

Each broken receiver leaves one trail row that says what happened; without PushResend nothing is
resubmitted, and the failure is logged and counted. A hanging receiver holds only its own slots:
another receiver served by the same node, or by another group, gets its notifications at once.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

import pytest

from chatpush.config import Settings
from chatpush.testing import FakeClock
from tests.conftest import ChatDriver
from tests.integration._push_support import (
    Client,
    Receivers,
    api,
    metric,
    push_form,
    settle,
    trail,
)

MakeClient = Callable[[Settings], Any]

NOT_RESUBMITTED = "delivery failed, not resubmitted (no PushResend): "


def closed_port() -> int:
    """A local port with nothing listening on it: connecting is refused."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


async def subscribe_and_notify(client: Client, group: str, **keys: str) -> ChatDriver:
    chat = ChatDriver(client)
    await chat.request_chat(**push_form(f"dev-{group}", NodeGroup=group, **keys))
    await chat.agent_joins()
    return chat


async def test_failures_leave_a_trail_row_and_are_not_resubmitted(
    make_settings: Callable[..., Settings],
    make_client: MakeClient,
    clock: FakeClock,
    caplog: pytest.LogCaptureFixture,
) -> None:
    async with Receivers() as receivers:
        error = await receivers.start(mode="error")
        missing = await receivers.start(status=404)
        hang = await receivers.start(mode="hang")
        too_slow = await receivers.start(delay_s=1.0)
        slow = await receivers.start(delay_s=0.15)
        port = closed_port()
        urls = {
            "error": error.url,
            "missing": missing.url,
            "hang": hang.url,
            "too-slow": too_slow.url,
            "slow": slow.url,
            "refused": f"http://127.0.0.1:{port}/push",
        }
        settings = make_settings(
            delivery={"total_timeout_s": 0.4, "connect_timeout_s": 0.4},
            groups={
                name: {"nodes": [f"n-{name}"], "customhttp.url": url} for name, url in urls.items()
            },
        )
        client: Client = await make_client(settings)
        with caplog.at_level(logging.WARNING, logger="chatpush.dispatch"):
            chats = {name: await subscribe_and_notify(client, name) for name in urls}
            await settle(client)
        rows = {name: await trail(client, chat.chat_id) for name, chat in chats.items()}
        for name, chat_rows in rows.items():
            assert len(chat_rows) == 1, (name, chat_rows)
        row = {name: chat_rows[0] for name, chat_rows in rows.items()}
        for name in urls:
            assert row[name]["node"] == f"n-{name}" and row[name]["nodeGroup"] == name
            assert row[name]["kind"] == "bare" and row[name]["notifyPosition"] == 2

        def summary(name: str) -> tuple[str, int | None, str | None]:
            return row[name]["outcome"], row[name]["httpStatus"], row[name]["error"]

        assert summary("error") == ("failed", 500, "receiver answered 500 Internal Server Error")
        assert summary("missing") == ("failed", 404, "receiver answered 404 Not Found")
        assert summary("hang") == ("failed", None, "timed out after 0.4 s")
        assert summary("too-slow") == ("failed", None, "timed out after 0.4 s")
        outcome, status, refused = summary("refused")
        assert (outcome, status) == ("failed", None)
        assert refused is not None and refused.startswith("ClientConnectorError")
        assert f"127.0.0.1:{port}" in refused
        assert summary("slow") == ("sent", 200, None)
        assert row["slow"]["latencyMs"] >= 140
        assert row["hang"]["latencyMs"] >= 380 and row["too-slow"]["latencyMs"] >= 380
        assert row["refused"]["latencyMs"] < 400

        # Logged once each, with the reason, as not resubmitted.
        logged = [
            r.getMessage() for r in caplog.records if r.getMessage().startswith(NOT_RESUBMITTED)
        ]
        failed = ["error", "missing", "hang", "too-slow", "refused"]
        assert sorted(logged) == sorted(
            NOT_RESUBMITTED + str(row[name]["error"]) for name in failed
        )
        assert await metric(client, "chatpush_deliveries_total", outcome="failed") == 5
        assert await metric(client, "chatpush_deliveries_total", outcome="sent") == 1
        assert (
            await metric(client, "chatpush_deliveries_total", outcome="failed", node="n-hang") == 1
        )

        # Nothing comes again: not with time, not with the chat's next activity.
        counts = [len(r.received) for r in (error, missing, hang, too_slow, slow)]
        assert counts == [1, 1, 1, 1, 1]
        clock.advance(3600)
        await settle(client)
        for chat in chats.values():
            await chat.op("refresh")
            sub = await api(client, "GET", f"/chats/{chat.chat_id}/subscription")
            assert sub["queued"] == [] and sub["outstandingTrigger"] is None
        await settle(client)
        assert [len(r.received) for r in (error, missing, hang, too_slow, slow)] == counts
        for name, chat in chats.items():
            assert len(await trail(client, chat.chat_id)) == 1, name
        assert await metric(client, "chatpush_deliveries_total") == 6


async def test_a_failed_delivery_does_not_hold_back_the_chats_next_notification(
    make_settings: Callable[..., Settings], make_client: MakeClient
) -> None:
    async with Receivers() as receivers:
        receiver = await receivers.start(mode="error")
        settings = make_settings(
            groups={"g": {"default": True, "nodes": ["n"], "customhttp.url": receiver.url}}
        )
        client: Client = await make_client(settings)
        chat = ChatDriver(client)
        await chat.request_chat(**push_form("dev", PushIncludePayload="true"))
        agent = await chat.agent_joins()
        await settle(client)
        receiver.mode = "ok"
        await chat.agent_says(agent, "next")
        await settle(client)
        indexes = [item.body["message"]["messages"][0]["index"] for item in receiver.received]
        assert indexes == [2, 3]
        rows = await trail(client, chat.chat_id)
        assert [(r["outcome"], r["httpStatus"]) for r in rows] == [("failed", 500), ("sent", 200)]


async def test_a_hanging_receiver_does_not_stall_healthy_ones(
    make_settings: Callable[..., Settings], make_client: MakeClient
) -> None:
    async with Receivers() as receivers:
        hang = await receivers.start(mode="hang")
        same_node = await receivers.start()
        other_group = await receivers.start()
        settings = make_settings(
            # One request at a time per receiver, two per node: the second hanging chat waits
            # for the receiver's only slot, and must not hold one of the node's two meanwhile.
            delivery={
                "total_timeout_s": 0.8,
                "concurrency_per_receiver": 1,
                "concurrency_per_node": 2,
            },
            groups={
                "broken": {
                    "nodes": ["n-broken"],
                    "customhttp.url": hang.url,
                    "providers": {"acme": {"customhttp.url": same_node.url}},
                },
                "fine": {"nodes": ["n-fine"], "customhttp.url": other_group.url},
            },
        )
        client: Client = await make_client(settings)
        stuck = [await subscribe_and_notify(client, "broken") for _ in range(2)]
        await asyncio.wait_for(hang.arrived.wait(), 2)
        await asyncio.sleep(0.05)  # let the second hanging chat queue for the receiver's slot
        loop = asyncio.get_running_loop()
        started = loop.time()
        via_provider = await subscribe_and_notify(client, "broken", PushProvider="acme")
        via_group = await subscribe_and_notify(client, "fine")
        await asyncio.wait_for(same_node.arrived.wait(), 0.4)
        await asyncio.wait_for(other_group.arrived.wait(), 0.4)
        assert loop.time() - started < 0.4
        # The hanging deliveries are still under way while the healthy ones went out.
        assert [len(await trail(client, chat.chat_id)) for chat in stuck] == [0, 0]
        assert len(hang.received) == 1
        await settle(client)
        assert [(r["outcome"], r["node"]) for r in await trail(client, via_provider.chat_id)] == [
            ("sent", "n-broken")
        ]
        assert [(r["outcome"], r["node"]) for r in await trail(client, via_group.chat_id)] == [
            ("sent", "n-fine")
        ]
        for chat in stuck:
            rows = await trail(client, chat.chat_id)
            assert [r["error"] for r in rows] == ["timed out after 0.8 s"]
        assert len(hang.received) == 2
