"""A cancellation of ``FakeClock.sleep_until`` must end the sleep, whenever it lands.

chatpush.testing.FakeClock used to lose one that landed while the sleeper tidied up after a
wake: the task slept on, and whoever awaited it after cancelling it (BayeuxServer.stop awaiting
its ``cometd-sweeper`` on the app's cleanup) waited for ever (about one run of tests/cometd in
twenty under load).
"""

from __future__ import annotations

import asyncio

from chatpush.testing import FakeClock


async def cancellation_lost(clock: FakeClock, spins: int) -> bool:
    """Sleep, move the clock, cancel the sleeper ``spins`` loop iterations later: True if the
    sleeper is still sleeping 0.2 s after."""
    task = asyncio.create_task(clock.sleep_until(None, asyncio.Event()))
    for _ in range(3):
        await asyncio.sleep(0)
    clock.advance(1)  # the sleeper wakes, tidies up and sleeps again
    for _ in range(spins):
        await asyncio.sleep(0)
    task.cancel()
    try:
        async with asyncio.timeout(0.2):
            await task
    except asyncio.CancelledError:
        return False
    except TimeoutError:
        task.cancel()  # it sleeps again: this one lands
        return True
    return False


async def test_fake_clock_never_loses_a_cancellation() -> None:
    assert [n for n in range(8) if await cancellation_lost(FakeClock(), n)] == []
