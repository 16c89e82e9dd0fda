"""Who may subscribe to which broadcast channel of ``/genesys/cometd``, and read what.

Only the push channels ``/_genesys/push/{deviceId}`` carry broadcasts; every other broadcast
subscription is refused (the chat over CometD answers on ``/service/...`` channels, which need
no subscription check). The credentials are the handshake's ``ext``:

- ``{"apiKey": "<a key with the bridge scope>"}``: a bridge of the mobile backend. It may
  subscribe to ``/_genesys/push/*`` (every device) or to any ``/_genesys/push/{deviceId}``, and
  reads every chat's notifications.
- ``{"chatId": "...", "secureKey": "..."}``: the chat's own client. It may subscribe only to the
  device channel of that chat's push subscription, while the chat is active, and reads only
  that chat's notifications: anyone may name any device id in a chat of their own, so the
  channel alone proves nothing (chatpush/providers/comet.py filters every message).

Nobody may subscribe to ``/**``, ``/*``, ``/_genesys/**``, ``/_genesys/*``, ``/_genesys/push/**``
or anything else. Credentials are checked on every subscribe, so a chat that ended or was
purged, or an API key that was removed by a restart with new settings, grants nothing more.
"""

from __future__ import annotations

import hmac
import logging
import re
from typing import Any

from aiohttp import web

from chatpush.api.access import BRIDGE, KeyRing
from chatpush.api.keys import COMETD, DATABASE, KEYS
from chatpush.cometd import Session
from chatpush.providers.comet import EVERY_CHAT, PUSH_PREFIX, READER, Reader, push_channel
from chatpush.store import chat_push
from chatpush.store.database import Database

log = logging.getLogger("chatpush.cometd.push")

ALL_DEVICES = PUSH_PREFIX + "*"
_CHAT_ID = re.compile(r"[\x21-\x7e]{1,64}")  # as chatpush/chat/service.py


def install_push_authorizer(app: web.Application) -> None:
    """Install the subscription authorizer on the app's Bayeux server."""
    keys, db = app[KEYS], app[DATABASE]

    async def authorize(session: Session, pattern: str) -> bool:
        reader = await reader_for(keys, db, session.handshake_ext, pattern)
        if reader is None:
            log.info(
                "cometd subscription to %s refused",
                pattern,
                extra={"action": "cometd_subscription_refused", "session": session.ref},
            )
            return False
        session.attributes[READER] = reader
        return True

    app[COMETD].authorize_subscribe(authorize)


def is_bridge(keys: KeyRing, ext: Any) -> bool:
    """The handshake ``ext`` carries a key with the bridge scope."""
    given = ext.get("apiKey") if isinstance(ext, dict) else None
    return isinstance(given, str) and keys.has_scope(given, BRIDGE)


async def reader_for(keys: KeyRing, db: Database, ext: Any, pattern: str) -> Reader | None:
    """Whose notifications a session with this ``ext`` reads on ``pattern``; None: refused."""
    if not pattern.startswith(PUSH_PREFIX):
        return None
    device_id = pattern.removeprefix(PUSH_PREFIX)
    if pattern == ALL_DEVICES:
        return EVERY_CHAT if is_bridge(keys, ext) else None
    if push_channel(device_id) != pattern:  # /_genesys/push/** or a deeper channel
        return None
    if is_bridge(keys, ext):
        return EVERY_CHAT
    if not isinstance(ext, dict):
        return None
    chat_id, secure_key = ext.get("chatId"), ext.get("secureKey")
    if not isinstance(chat_id, str) or not isinstance(secure_key, str) or not secure_key:
        return None
    if not _CHAT_ID.fullmatch(chat_id):
        return None
    found = await db.read(chat_push.chat_and_device, chat_id)
    if found is None:
        return None
    chat, subscribed_device = found
    # surrogatepass: a lone surrogate in the ext (valid JSON) must not raise, only mismatch.
    given = secure_key.encode("utf-8", "surrogatepass")
    if not hmac.compare_digest(chat.secure_key.encode(), given) or chat.ended:
        return None
    if subscribed_device != device_id:
        return None
    return Reader(chat_id)
