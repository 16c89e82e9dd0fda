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

With ``--signing-secret`` (the group's ``customhttp.signing_secret``, ``whsec_`` + base64) every
POST must carry a valid Standard Webhooks signature (``webhook-id``, ``webhook-timestamp`` within
five minutes, ``webhook-signature``): anything else is answered 401 and not acted on. Each
``webhook-id`` (one per notification attempt) is acted on once: an attempt that reaches the
receiver twice (its sender died before recording the answer, and another instance took the
notification over; a proxy's retry) is answered 200 again without a second refresh. The last
10,000 ids are remembered. A resend of a reliable trigger is a new attempt with a new id.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import binascii
import hashlib
import hmac
import json
import sys
import time
from collections import OrderedDict
from typing import Any

from aiohttp import ClientSession, ClientTimeout, web

CHATPUSH = web.AppKey("chatpush", str)
SERVICE = web.AppKey("service", str)
SESSION = web.AppKey("session", ClientSession)
TASKS = web.AppKey("tasks", set)
SECRET = web.AppKey("secret", bytes)
SEEN = web.AppKey("seen", OrderedDict)
TOLERANCE_S = 300
"""A signed POST older or newer than this is refused (a replayed capture)."""
MAX_SEEN_IDS = 10_000


def webhook_key(secret: str) -> bytes:
    """The HMAC key of a ``whsec_`` secret; ValueError when it is not one."""
    try:
        key = base64.b64decode(secret.removeprefix("whsec_"), validate=True)
    except binascii.Error:
        key = b""
    if not key:
        raise ValueError("--signing-secret must be whsec_ followed by base64")
    return key


def signature_problem(key: bytes, headers: Any, payload: bytes, now_s: float) -> str | None:
    """Why the Standard Webhooks signature of a POST is not good, or None when it is."""
    message_id = headers.get("webhook-id", "")
    timestamp = headers.get("webhook-timestamp", "")
    signatures = headers.get("webhook-signature", "")
    if not (message_id and timestamp and signatures):
        return "missing webhook-id, webhook-timestamp or webhook-signature"
    if not timestamp.isdigit() or abs(now_s - int(timestamp)) > TOLERANCE_S:
        return "webhook-timestamp is not within five minutes of now"
    signed = f"{message_id}.{timestamp}.".encode() + payload
    expected = base64.b64encode(hmac.digest(key, signed, hashlib.sha256))
    # The header may hold several "v1,<base64>" entries (while a secret is being changed).
    for entry in signatures.split():
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return None
    return "webhook-signature does not match"


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
    payload = await request.read()
    if SECRET in request.app:
        problem = signature_problem(request.app[SECRET], request.headers, payload, time.time())
        if problem is not None:
            say(f"refused a POST: {problem}")
            return web.Response(status=401, text=problem)
    message_id = request.headers.get("webhook-id")
    if message_id:
        seen = request.app[SEEN]
        if message_id in seen:
            say(f"duplicate {message_id}: acknowledged again, not acted on")
            return web.Response(text="ok (duplicate)")
        seen[message_id] = True
        if len(seen) > MAX_SEEN_IDS:
            seen.popitem(last=False)
    try:
        body = json.loads(payload)
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
    parser.add_argument(
        "--signing-secret",
        help="the group's customhttp.signing_secret (whsec_...): refuse unsigned POSTs (401)",
    )
    args = parser.parse_args(argv)
    app = web.Application()
    app[SEEN] = OrderedDict()
    if args.signing_secret:
        try:
            app[SECRET] = webhook_key(args.signing_secret)
        except ValueError as exc:
            parser.error(str(exc))
    else:
        say("no --signing-secret: anyone who reaches this port can post notifications")
    app[CHATPUSH] = args.chatpush.rstrip("/")
    app[SERVICE] = args.service
    app[TASKS] = set()
    app.cleanup_ctx.append(client_ctx)
    app.router.add_post("/push", notification)
    listening = f"receiver listening on http://{args.host}:{args.port}/push"
    # run_app "prints" once its port is bound: saying so before would race a client started
    # on that line.
    web.run_app(app, host=args.host, port=args.port, print=lambda _running: say(listening))
    return 0


if __name__ == "__main__":
    sys.exit(main())
