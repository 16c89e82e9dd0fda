"""Draining a node under load (CONTRACT §9): its chats move to the other node, nothing is lost.

``chatpush serve`` runs as a real process with one group of two nodes; chats with reliable push
are pinned over both by the hash of their id. Agent messages flow to every chat and a real
receiver acknowledges every trigger. ``POST /api/v1/nodes/node-1/drain`` in the middle of it:
each chat of node-1 must have its next notification sent by node-2 no later than one resend
delay after the drain (a delivery already under way on node-1 may still finish there), the chats
of node-2 never move, and every chat ends acknowledged up to its last index.
"""

from __future__ import annotations

from pathlib import Path

from tests.fault.support import (
    Chatpush,
    Load,
    check_coverage,
    check_duplicates,
    check_transcripts,
    gather_limited,
    now_ms,
    run_load,
    two_node_chatpush,
    wait_all_acknowledged,
)

CHATS = 24
"""Three per load worker, so each chat gets an event every few hundred milliseconds."""
RESEND_DELAY_S = 1
PHASE_EVENTS = 100


async def test_drained_node_hands_its_chats_over_within_one_resend_delay(
    tmp_path: Path, processes: list[Chatpush]
) -> None:
    async with two_node_chatpush(tmp_path, processes, CHATS, RESEND_DELAY_S) as started:
        chatpush, receiver = started.chatpush, started.receiver
        api, chats = started.api, started.chats
        async with Load(api, chats) as load:
            await run_load(load, PHASE_EVENTS, chatpush)
            pins = {
                chat.chat_id: (await api.subscription(chat.chat_id))["pinnedNode"] for chat in chats
            }
            moving = sorted(chat_id for chat_id, node in pins.items() if node == "node-1")
            staying = sorted(chat_id for chat_id, node in pins.items() if node == "node-2")
            assert len(moving) + len(staying) == CHATS, pins
            assert moving and staying, f"the chats are not spread over both nodes: {pins}"

            drain_asked_ms = now_ms()
            await api.call("POST", "/nodes/node-1/drain")
            drained_ms = now_ms()
            # Load on, for well over one resend delay.
            await run_load(load, PHASE_EVENTS, chatpush, at_least_s=2 * RESEND_DELAY_S)
            await load.finish()

            last_index = await wait_all_acknowledged(api, chats, 30, receiver, chatpush)
            assert await check_transcripts(api, load) == []
            assert check_coverage(receiver, chats, last_index) == []
            assert check_duplicates(receiver, crashed=False) == []
            assert receiver.problems == []
            assert load.refused == [], load.refused[:5]
            assert chatpush.problems() == []

            trails = dict(
                zip(
                    [chat.chat_id for chat in chats],
                    await gather_limited([api.deliveries(chat.chat_id) for chat in chats]),
                    strict=True,
                )
            )
            nodes = {node["name"]: node for node in (await api.call("GET", "/nodes"))["nodes"]}
            subscriptions = {chat.chat_id: await api.subscription(chat.chat_id) for chat in chats}

        assert {row["outcome"] for rows in trails.values() for row in rows} == {"sent"}
        assert nodes["node-1"]["drained"] and not nodes["node-1"]["available"]
        assert nodes["node-1"]["pinnedChats"] == []
        assert sorted(nodes["node-2"]["pinnedChats"]) == sorted(pins)
        assert {sub["pinnedNode"] for sub in subscriptions.values()} == {"node-2"}

        for chat_id in staying:
            assert {row["node"] for row in trails[chat_id]} == {"node-2"}, trails[chat_id]

        move_ms = []
        for chat_id in moving:
            rows = trails[chat_id]
            before = [row for row in rows if row["at"] < drain_asked_ms]
            after = [row for row in rows if row["at"] >= drain_asked_ms]
            assert {row["node"] for row in before} == {"node-1"}, rows
            # At most one delivery of the chat can be under way at the drain: it may finish on
            # node-1; it must have started before the drain took effect.
            if after and after[0]["node"] == "node-1":
                started_ms = after[0]["at"] - after[0]["latencyMs"]
                assert started_ms <= drained_ms, (chat_id, after[0], drained_ms)
                after = after[1:]
            assert after, f"{chat_id}: no notification after the drain: {rows}"
            assert {row["node"] for row in after} == {"node-2"}, (chat_id, after)
            first = after[0]
            moved_after_ms = first["at"] - first["latencyMs"] - drained_ms
            move_ms.append(moved_after_ms)
            assert moved_after_ms <= RESEND_DELAY_S * 1000, (
                f"{chat_id}: first notification on node-2 started {moved_after_ms} ms after the "
                f"drain, later than one resend delay ({RESEND_DELAY_S} s): {first}"
            )
        print(
            f"\ndrain: {len(moving)} chats moved from node-1 to node-2, {len(staying)} stayed; "
            f"first notification on node-2 after {max(0, min(move_ms))}-{max(move_ms)} ms; "
            f"{load.count} events, {len(receiver.arrivals)} triggers"
        )
