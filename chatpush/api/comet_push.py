"""Who may subscribe to which broadcast channel of ``/genesys/cometd`` (docs/cometd.md).

Only the push channels ``/_genesys/push/{deviceId}`` carry broadcasts; every other broadcast
subscription is refused (the chat over CometD answers on ``/service/...`` channels, which need
no subscription check). The credentials are the handshake's ``ext``:

- ``{"apiKey": "<one of security.api_keys>"}``: a bridge of the mobile backend. It may subscribe
  to ``/_genesys/push/*`` (every device) or to any ``/_genesys/push/{deviceId}``.
- ``{"chatId": "...", "secureKey": "..."}``: the chat's own client. It may subscribe only to the
  device channel of that chat's push subscription, while the chat exists.

Nobody may subscribe to ``/**``, ``/*``, ``/_genesys/**``, ``/_genesys/*``, ``/_genesys/push/**``
or anything else. Credentials are checked on every subscribe, so a chat that was purged, or an
API key that was removed by a restart with new settings, grants nothing more.
"""

from __future__ import annotations

import hmac
import logging
import re
from typing import Any

from aiohttp import web
from sqlalchemy.engine import Connection

from chatpush.api.keys import COMETD, DATABASE, SETTINGS
from chatpush.cometd import Session
from chatpush.config import Settings
from chatpush.providers.comet import PUSH_PREFIX, push_channel
from chatpush.store import chats as chat_store
from chatpush.store import push as push_store
from chatpush.store.database import Database

log = logging.getLogger("chatpush.cometd.push")

ALL_DEVICES = PUSH_PREFIX + "*"
_CHAT_ID = re.compile(r"[\x21-\x7e]{1,64}")  # as chatpush/chat/service.py


def install_push_authorizer(app: web.Application) -> None:
    """Install the subscription authorizer on the app's Bayeux server."""
    settings, db = app[SETTINGS], app[DATABASE]

    async def authorize(session: Session, pattern: str) -> bool:
        allowed = await may_subscribe(settings, db, session.handshake_ext, pattern)
        if not allowed:
            log.info(
                "cometd subscription to %s refused",
                pattern,
                extra={"action": "cometd_subscription_refused", "session": session.ref},
            )
        return allowed

    app[COMETD].authorize_subscribe(authorize)


def is_bridge(settings: Settings, ext: Any) -> bool:
    """The handshake ``ext`` carries one of the configured API keys."""
    given = ext.get("apiKey") if isinstance(ext, dict) else None
    if not isinstance(given, str) or not given:
        return False
    given_bytes = given.encode("utf-8", "surrogatepass")
    matched = False
    for key in settings.security.api_keys:  # all of them: the time says nothing of which is near
        matched |= hmac.compare_digest(key.get_secret_value().encode(), given_bytes)
    return matched


async def may_subscribe(settings: Settings, db: Database, ext: Any, pattern: str) -> bool:
    if not pattern.startswith(PUSH_PREFIX):
        return False
    device_id = pattern.removeprefix(PUSH_PREFIX)
    if pattern == ALL_DEVICES:
        return is_bridge(settings, ext)
    if push_channel(device_id) != pattern:  # /_genesys/push/** or a deeper channel
        return False
    if is_bridge(settings, ext):
        return True
    if not isinstance(ext, dict):
        return False
    chat_id, secure_key = ext.get("chatId"), ext.get("secureKey")
    if not isinstance(chat_id, str) or not isinstance(secure_key, str) or not secure_key:
        return False
    if not _CHAT_ID.fullmatch(chat_id):
        return False
    return await db.read(_chat_owns_device, chat_id, secure_key, device_id)


def _chat_owns_device(conn: Connection, chat_id: str, secure_key: str, device_id: str) -> bool:
    chat = chat_store.get_chat(conn, chat_id)
    # surrogatepass: a lone surrogate in the ext (valid JSON) must not raise, only mismatch.
    given = secure_key.encode("utf-8", "surrogatepass")
    if chat is None or not hmac.compare_digest(chat.secure_key.encode(), given):
        return False
    subscription = push_store.subscriptions_for(conn, [chat_id]).get(chat_id)
    return subscription is not None and subscription.request.device_id == device_id
