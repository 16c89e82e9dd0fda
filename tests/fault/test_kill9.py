"""kill -9 in the middle of a load (CONTRACT §8.6): at-least-once, never a gap, nothing lost.

``chatpush serve`` runs as a real process on a SQLite file. Fifty chats with reliable push
(``GCTI_GMS_PushResend``) get agent messages as fast as eight clients can post them, while a real
receiver acknowledges every trigger by ``refresh`` from its ``notify-position``. The process is
killed with SIGKILL mid-load and started again on the same file and port; the load and the
receiver carry on, then the load stops and every chat must end acknowledged up to its last index.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from tests.fault.support import (
    Chatpush,
    Load,
    check_coverage,
    check_duplicates,
    check_transcripts,
    gather_limited,
    run_load,
    two_node_chatpush,
    wait_all_acknowledged,
)

CHATS = 50
RESEND_DELAY_S = 1
PHASE_EVENTS = 300
"""Events accepted before the kill, and again after the restart, before the next step."""


async def test_kill9_mid_load_loses_no_event_and_skips_no_position(
    tmp_path: Path, processes: list[Chatpush]
) -> None:
    async with two_node_chatpush(tmp_path, processes, CHATS, RESEND_DELAY_S) as started:
        chatpush, receiver = started.chatpush, started.receiver
        api, chats = started.api, started.chats
        async with Load(api, chats) as load:
            await run_load(load, PHASE_EVENTS, chatpush)

            before = (load.count, len(receiver.arrivals), len(receiver.retrievals))
            chatpush.kill()
            # What the killed process had already written to the receiver's socket is still
            # taken as generation 0; whatever arrives from now on comes from the new process.
            await asyncio.sleep(0.3)
            receiver.generation = 1
            chatpush.start()
            await chatpush.wait_ready()
            cut = load.cut
            await run_load(load, PHASE_EVENTS, chatpush)
            await load.finish()

            last_index = await wait_all_acknowledged(api, chats, 30, receiver, chatpush)
            # Every event answered 201, before or after the kill, is in the transcript.
            assert await check_transcripts(api, load) == []
            assert check_coverage(receiver, chats, last_index) == []
            assert check_duplicates(receiver, crashed=True) == []
            assert receiver.problems == []
            assert load.refused == [], load.refused[:5]
            trail = await gather_limited([api.deliveries(chat.chat_id) for chat in chats])
            outcomes = {row["outcome"] for rows in trail for row in rows}
            assert outcomes == {"sent"}, outcomes
            assert chatpush.problems() == []

        # The kill did land mid-load: requests were cut, and both processes did real work.
        assert cut >= 1, "no request was in flight when chatpush was killed"
        assert before[1] >= CHATS and len(receiver.arrivals) - before[1] >= CHATS
        resent_after_crash = len(receiver.arrivals) - len(
            {(a.chat_id, a.position, a.attempt) for a in receiver.arrivals}
        )
        print(
            f"\nkill -9: {load.count} events accepted ({before[0]} before the kill, "
            f"{cut} requests cut), {len(receiver.arrivals)} triggers "
            f"({resent_after_crash} sent again after the crash), "
            f"{len(receiver.retrievals)} refreshes, max index {max(last_index.values())}"
        )
