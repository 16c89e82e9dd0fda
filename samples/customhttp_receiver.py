#!/usr/bin/env python3
"""A custom HTTP receiver for a mobile backend: takes chatpush notifications, acknowledges them.

For a reliable trigger (a ``PushUrl`` whose ``userData`` carries ``notify-position``), it calls
Chat API v2 ``refresh`` with ``transcriptPosition`` = ``notify-position`` and the ``secure-key`` of
the trigger, prints the new events, and so acknowledges the trigger: chatpush stops resending it.
Payload notifications (with ``GCTI_GMS_PushIncludePayload``) and bare ones are printed as they come.

    python samples/customhttp_receiver.py --chatpush http://127.0.0.1:8080 \
        --service customer-support

The service needs ``flex-push-content`` to include ``session-id`` and ``secure-key`` (see
``samples/push.toml``). Only the Python standard library and aiohttp are used.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

CHATPUSH = web.AppKey("chatpush", str)
SERVICE = web.AppKey("service", str)
SESSION = web.AppKey("session", ClientSession)
TASKS = web.AppKey("tasks", set)


def say(*parts: Any) -> None:
    print(*parts, flush=True)


async def acknowledge(app: web.Application, user_data: dict[str, str], ended: bool) -> None:
    chat_id, secure_key = user_data.get("session-id"), user_data.get("secure-key")
    if not chat_id or not secure_key:
        say("  cannot refresh: the trigger lacks session-id or secure-key (see flex-push-content)")
        return
    position = user_data["notify-position"]
    form = {"secureKey": secure_key}
    if position != "-1":  # -1: the customer was removed; read everything that is left
        form["transcriptPosition"] = position
    url = f"{app[CHATPUSH]}/genesys/2/chat/{app[SERVICE]}/{chat_id}/refresh"
    async with app[SESSION].post(url, data=form) as reply:
        body = await reply.json()
    if reply.status != 200:
        say(f"  refresh failed: HTTP {reply.status} {body.get('errors')}")
        return
    for event in body["messages"]:
        who = event["from"]["nickname"] or event["from"]["type"]
        say(f"  #{event['index']} {event['type']:<18} {who}: {event.get('text', '')}")
    suffix = " - chat ended" if body["chatEnded"] or ended else ""
    say(f"  acknowledged up to {body['nextPosition'] - 1}{suffix}")


async def notification(request: web.Request) -> web.Response:
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return web.Response(status=400, text="not JSON")
    message = body.get("message")
    if not isinstance(message, dict):
        say(f"notification for device {body.get('deviceId')} (no payload)")
        return web.Response(text="ok")
    events = message.get("messages") or [{}]
    user_data = events[0].get("userData") or {}
    if events[0].get("type") == "PushUrl" and "notify-position" in user_data:
        say(
            f"trigger for device {body.get('deviceId')}: notify-position "
            f"{user_data['notify-position']}, attempt {user_data.get('notify-attempt')}"
            + (", chat ended" if message.get("chatEnded") else "")
        )
        # Answer at once; refresh in the background, so chatpush is never held up by us.
        task = asyncio.create_task(
            acknowledge(request.app, user_data, bool(message.get("chatEnded")))
        )
        request.app[TASKS].add(task)
        task.add_done_callback(request.app[TASKS].discard)
    else:
        for event in events:
            say(f"event #{event.get('index')} {event.get('type')}: {event.get('text', '')}")
    return web.Response(text="ok")


async def client_ctx(app: web.Application) -> Any:
    app[SESSION] = ClientSession(timeout=ClientTimeout(total=10))
    yield
    await app[SESSION].close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chatpush", default="http://127.0.0.1:8080", help="chatpush base URL")
    parser.add_argument("--service", default="customer-support", help="Chat API service name")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=9000)
    args = parser.parse_args(argv)
    app = web.Application()
    app[CHATPUSH] = args.chatpush.rstrip("/")
    app[SERVICE] = args.service
    app[TASKS] = set()
    app.cleanup_ctx.append(client_ctx)
    app.router.add_post("/push", notification)
    say(f"receiver listening on http://{args.host}:{args.port}/push")
    web.run_app(app, host=args.host, port=args.port, print=None)
    return 0


if __name__ == "__main__":
    sys.exit(main())
