#!/usr/bin/env python3
"""A status receiver for chatpush's callbacks (an ``httpcb`` target): prints each status event.

It prints a callback's device pushes too, when a create names it as the phone (push keys
``_device_os=httpcb``, ``_device_notification_id=<its URL>``): one line ``push <event>
<state> <callbackId> {the other keys}`` per ``CALLBACK_*`` push (docs/callbacks.md §7.3), whose
``_id`` and ``_action`` name the dialog an app fetches next.

Point a service's ``_status_notification_target`` (or a create's) at it, with
``_enable_status_notification = "subscribe_notify"`` (docs/callbacks.md §5):

    python samples/httpcb_receiver.py --port 8090 --signing-secret whsec_...

Each POST is one ``_cbe_on_*`` event, the bare JSON body of docs/callbacks.md §5.4. It prints
one line per event: ``<event_id> <_callback_state> <_service_id> {the other keys}``, and
answers 204 (any 2xx is success; a 5xx or no answer makes chatpush try again, with the same
``webhook-id``).

With ``--signing-secret`` (the node group's ``customhttp.signing_secret``, ``whsec_`` + base64)
every POST must carry a valid Standard Webhooks signature (``webhook-id``,
``webhook-timestamp`` within five minutes, ``webhook-signature``): anything else is answered
401 and not printed. An event whose ``webhook-id`` was seen already (chatpush tried again after
an answer got lost) is answered 204 and printed once only. The last 10,000 ids are remembered.
Only the Python standard library and aiohttp are used.
"""

from __future__ import annotations

import argparse
import base64
import binascii
import hashlib
import hmac
import json
import sys
import time
from collections import OrderedDict
from typing import Any

from aiohttp import web

SECRET = web.AppKey("secret", bytes)
SEEN = web.AppKey("seen", OrderedDict)
TOLERANCE_S = 300
MAX_SEEN = 10_000
MAX_BODY_BYTES = 1_048_576


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
    for entry in signatures.split():  # several "v1,<base64>" while a secret is being changed
        version, _, value = entry.partition(",")
        if version == "v1" and hmac.compare_digest(value.encode(), expected):
            return None
    return "webhook-signature does not match"


def say(*parts: Any) -> None:
    print(*parts, flush=True)


def describe_push(push: dict[str, Any]) -> str:
    rest = {
        key: value for key, value in push.items() if key not in ("event", "state", "callbackId")
    }
    return " ".join(
        [
            "push",
            str(push.get("event")),
            str(push.get("state")),
            str(push.get("callbackId")),
            json.dumps(rest, separators=(",", ":")),
        ]
    )


def describe(event: dict[str, Any]) -> str:
    rest = {
        key: value
        for key, value in event.items()
        if key not in ("event_id", "_callback_state", "_service_id")
    }
    return " ".join(
        [
            str(event.get("event_id")),
            str(event.get("_callback_state")),
            str(event.get("_service_id", "-")),
            json.dumps(rest, separators=(",", ":")),
        ]
    )


async def status_event(request: web.Request) -> web.Response:
    payload = await request.content.read(MAX_BODY_BYTES + 1)
    if len(payload) > MAX_BODY_BYTES:
        return web.Response(status=413, text="too large")
    key = request.app.get(SECRET)
    if key is not None:
        problem = signature_problem(key, request.headers, payload, time.time())
        if problem is not None:
            say(f"refused (401): {problem}")
            return web.Response(status=401, text=problem)
    try:
        event = json.loads(payload)
    except ValueError:
        return web.Response(status=400, text="not JSON")
    is_push = isinstance(event, dict) and str(event.get("event", "")).startswith("CALLBACK_")
    if not isinstance(event, dict) or ("event_id" not in event and not is_push):
        return web.Response(status=400, text="not a status event or a callback's push")
    seen = request.app[SEEN]
    message_id = request.headers.get("webhook-id")
    if message_id is not None:
        if message_id in seen:
            say(f"repeat of {message_id}, printed already")
            return web.Response(status=204)
        seen[message_id] = True
        while len(seen) > MAX_SEEN:
            seen.popitem(last=False)
    say(describe_push(event) if is_push else describe(event))
    return web.Response(status=204)


def make_app(secret: str | None) -> web.Application:
    app = web.Application(client_max_size=MAX_BODY_BYTES)
    if secret is not None:
        app[SECRET] = webhook_key(secret)
    app[SEEN] = OrderedDict()
    app.router.add_post("/{tail:.*}", status_event)
    return app


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8090)
    parser.add_argument("--signing-secret", help="the group's customhttp.signing_secret")
    args = parser.parse_args(argv)
    try:
        app = make_app(args.signing_secret)
    except ValueError as exc:
        print(f"httpcb_receiver: {exc}", file=sys.stderr)
        return 2
    listening = f"receiver listening on http://{args.host}:{args.port}/"
    # run_app "prints" once its port is bound: saying so before would race a client started
    # on that line.
    web.run_app(app, host=args.host, port=args.port, print=lambda _running: say(listening))
    return 0


if __name__ == "__main__":
    sys.exit(main())
