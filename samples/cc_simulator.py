#!/usr/bin/env python3
"""A contact-centre side for chatpush's callbacks: it pulls commands and plays each callback's life.

For every ``callback.created`` or ``callback.queued`` command of an immediate (or now due) callback
it posts, with increasing ``seq``: ``session_started``, the estimated wait falling (``POST
/api/v1/callbacks/ewt``), then ``dial_init`` / ``dial_done`` (the first ``--failed-dials`` attempts
fail), ``customer_queued``, ``route_to_agent`` and ``exit`` with ``AGENT_CONNECTED``. A
Click-To-Call-In callback (``_call_direction`` ``USERORIGINATED``) gets ``ready`` and ``call_in``
with an access number and code instead of the dials, and goes on when the app answers ``connect``
(a ``callback.user_action`` command). It acknowledges every command it has handled; commands of
callbacks already completed are acknowledged and skipped.

    python samples/cc_simulator.py --chatpush http://127.0.0.1:8080 --api-key dev-api-key

Only aiohttp (a chatpush dependency). ``--once`` plays what is waiting and stops.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import ClientSession, ClientTimeout


def say(*parts: Any) -> None:
    print(*parts, flush=True)


@dataclass
class Life:
    """What the simulator knows of one callback."""

    callback_id: str
    user_originated: bool
    seq: int = 0
    done: bool = False
    waiting_for_connect: bool = False
    history: list[str] = field(default_factory=list)


class Simulator:
    def __init__(self, session: ClientSession, base: str, failed_dials: int, pause_s: float):
        self.session = session
        self.base = base.rstrip("/") + "/api/v1/callbacks"
        self.failed_dials = failed_dials
        self.pause_s = pause_s
        self.lives: dict[str, Life] = {}

    async def _post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.session.post(self.base + path, json=body) as response:
            answer: dict[str, Any] = await response.json()
            if response.status >= 400:
                raise RuntimeError(f"POST {path}: {response.status} {answer}")
            return answer

    async def last_seq(self, callback_id: str) -> int:
        async with self.session.get(f"{self.base}/{callback_id}") as response:
            if response.status != 200:
                return 0
            state: dict[str, Any] = await response.json()
            return int(state["lastSeq"])

    async def event(self, life: Life, kind: str, **fields: Any) -> dict[str, Any]:
        life.seq += 1
        body = {"seq": life.seq, "type": kind, "at": self.now_ms(), **fields}
        answer = await self._post(f"/{life.callback_id}/events", body)
        life.history.append(kind)
        say(f"{life.callback_id} {kind} -> {answer['state']} {answer['reason'] or ''}".rstrip())
        if answer["state"] == "COMPLETED":
            life.done = True
        await asyncio.sleep(self.pause_s)
        return answer

    def now_ms(self) -> int:
        """Epoch ms, increasing: an estimated wait applies only if newer than the last one."""
        self.last_ms = max(int(time.time() * 1000), getattr(self, "last_ms", 0) + 1)
        return self.last_ms

    async def ewt(self, life: Life, ewt_s: int, position: int) -> None:
        update = {
            "at": self.now_ms(),
            "callbackId": life.callback_id,
            "ewt": ewt_s,
            "position": position,
            "totalWaiting": position + 2,
        }
        await self._post("/ewt", {"updates": [update]})

    async def play(self, life: Life) -> None:
        await self.event(life, "session_started")
        for ewt_s, position in ((600, 5), (240, 2), (30, 1)):
            await self.ewt(life, ewt_s, position)
        if life.user_originated:
            await self.event(life, "ready")
            await self.event(life, "call_in", accessNumber="+18005550100", accessCode="4711")
            life.waiting_for_connect = True
            return  # the app's "connect" (a callback.user_action command) goes on
        for attempt in range(1, self.failed_dials + 2):
            await self.event(life, "dial_init")
            connected = attempt > self.failed_dials
            answer = await self.event(life, "dial_done", attempt=attempt, connected=connected)
            if life.done:
                return
            if not connected and answer["state"] == "QUEUED":
                continue
        await self.finish(life)

    async def finish(self, life: Life) -> None:
        await self.event(life, "customer_queued")
        await self.event(life, "route_to_agent", attributes={"c_agent_id": "agent-1"})
        await self.event(life, "exit", reason="AGENT_CONNECTED")

    async def handle(self, command: dict[str, Any]) -> None:
        callback = command["callback"]
        callback_id = command["callbackId"]
        life = self.lives.get(callback_id)
        if life is None:
            life = Life(callback_id, callback.get("_call_direction") == "USERORIGINATED")
            life.seq = await self.last_seq(callback_id)  # from an earlier run of this simulator
            self.lives[callback_id] = life
        say(f"{callback_id} command {command['type']} seq {command['seq']}")
        if life.done or callback.get("_callback_state") == "COMPLETED":
            life.done = True
            return
        if command["type"] in ("callback.created", "callback.queued"):
            if callback.get("_callback_state") == "QUEUED":
                await self.play(life)
        elif command["type"] == "callback.user_action" and life.user_originated:
            life.waiting_for_connect = False
            await self.event(life, "route_to_agent", attributes={"c_agent_id": "agent-1"})
            await self.event(life, "exit", reason="AGENT_CONNECTED")

    async def round(self, wait_s: int) -> int:
        url = f"{self.base}/commands"
        async with self.session.get(url, params={"wait_s": str(wait_s)}) as response:
            body = await response.json()
            if response.status >= 400:
                raise RuntimeError(f"GET commands: {response.status} {body}")
        commands = body["commands"]
        for command in commands:
            await self.handle(command)
        if commands:
            await self._post("/commands/ack", {"ids": [c["id"] for c in commands]})
        return len(commands)


async def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--chatpush", default="http://127.0.0.1:8080")
    parser.add_argument("--api-key", default=os.environ.get("CHATPUSH_API_KEY", ""))
    parser.add_argument("--failed-dials", type=int, default=1)
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between events")
    parser.add_argument("--once", action="store_true", help="play what is waiting, then stop")
    args = parser.parse_args(argv)
    if not args.api_key:
        parser.error("--api-key (or CHATPUSH_API_KEY) is needed: a key with the chat-server scope")
    headers = {"X-API-Key": args.api_key}
    async with ClientSession(headers=headers, timeout=ClientTimeout(total=60)) as session:
        simulator = Simulator(session, args.chatpush, args.failed_dials, args.pause)
        while True:
            handled = await simulator.round(0 if args.once else 20)
            if args.once and handled == 0:
                return 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
