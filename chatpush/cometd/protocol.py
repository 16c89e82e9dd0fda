"""Bayeux 1.0 on the wire: constants, error strings, batch decoding and reply rendering.

Errors are Bayeux ``error`` strings ``code::slug``; clients read only the three-digit code
(``402`` makes them handshake again, the others are reported to the application):

    400::invalid_json                  body or frame is not UTF-8 JSON (NaN and Infinity included)
    400::invalid_batch                 JSON, but not a message object or a non-empty array of them
    400::invalid_message               an element of the batch is not an object
    400::invalid_id                    ``id`` is neither a string nor an integer
    400::invalid_channel               ``channel`` missing or malformed, or a wildcard in a publish
    400::unknown_meta_channel          a ``/meta/`` channel that Bayeux does not define
    400::handshake_not_alone           a handshake must be the only message of its batch
    400::invalid_connection_types      ``supportedConnectionTypes`` is not a list of strings
    400::invalid_subscription          ``subscription`` missing or malformed
    400::ext_too_large                 a handshake ``ext`` over ``max_ext_bytes`` as JSON, or nested
                                       deeper than ``max_ext_depth`` (no session is created)
    400::missing_data                  a publish without ``data``
    400::websocket_upgrade_required    ``GET`` on the endpoint without ``Upgrade: websocket``
    402::session_unknown               no live session has that ``clientId`` (or none was sent)
    403::meta_subscription_denied      ``/meta/*`` channels cannot be subscribed to
    403::subscription_denied           the application's subscribe authorizer said no
    403::publish_denied                the application's publish authorizer said no (the default)
    403::too_many_subscriptions        the session has ``max_subscriptions`` patterns already
    404::unknown_service               no service handler for that ``/service/`` channel
    406::unsupported_connection_types  none of the client's connection types is served here
    413::message_too_large             body or frame longer than ``max_message_bytes``
    429::too_many_sessions_from_address  ``max_sessions_per_address`` sessions from this client
                                       address (IPv6: /64) already; advice: handshake again
    500::internal_error                an application hook raised (a bug: logged with traceback)
    503::too_many_sessions             ``max_sessions`` reached, or the server is stopping; advice:
                                       handshake again
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any, Final

VERSION: Final = "1.0"
LONG_POLLING: Final = "long-polling"
WEBSOCKET: Final = "websocket"
CONNECTION_TYPES: Final = (LONG_POLLING, WEBSOCKET)
"""What this server serves. Not ``callback-polling``: JSONP is not implemented."""

HANDSHAKE: Final = "/meta/handshake"
CONNECT: Final = "/meta/connect"
DISCONNECT: Final = "/meta/disconnect"
SUBSCRIBE: Final = "/meta/subscribe"
UNSUBSCRIBE: Final = "/meta/unsubscribe"
META_CHANNELS: Final = frozenset((HANDSHAKE, CONNECT, DISCONNECT, SUBSCRIBE, UNSUBSCRIBE))
"""Valid channel names, known without parsing them (most messages are on one of these)."""
ERROR_CHANNEL: Final = "/meta/error"
"""The channel of an error reply that has no valid channel to echo (a body that is not JSON)."""

SESSION_UNKNOWN: Final = "402::session_unknown"
EXT_TOO_LARGE: Final = "400::ext_too_large"
MESSAGE_TOO_LARGE: Final = "413::message_too_large"
TOO_MANY_SESSIONS_FROM_ADDRESS: Final = "429::too_many_sessions_from_address"
TOO_MANY_SESSIONS: Final = "503::too_many_sessions"

HANDSHAKE_ADVICE: Final[Mapping[str, Any]] = {"reconnect": "handshake", "interval": 0}
"""``interval`` is always 0: aiocometd reads it as seconds, the JavaScript client as ms."""
NO_RECONNECT_ADVICE: Final[Mapping[str, Any]] = {"reconnect": "none", "interval": 0}


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")
"""Only an escape can put a surrogate in decoded text: strict UTF-8 decoding refuses raw ones."""


class BatchError(Exception):
    """The body or frame as a whole cannot be read as Bayeux messages."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


_DECODE = json.JSONDecoder(parse_constant=_refuse_constant).decode
"""One decoder for every batch: json.loads with options builds a new one per call."""


def decode_batch(body: str | bytes) -> list[Any]:
    """The messages of a body or websocket frame: an array of messages, or a single object.

    Raises BatchError. The elements are not checked here: each gets its own reply.
    """
    try:
        text = body.decode("utf-8") if isinstance(body, bytes) else body
        # NaN and Infinity would be echoed into replies as invalid JSON; deep nesting would
        # raise RecursionError from the decoder.
        decoded = _DECODE(text)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError is a ValueError
        raise BatchError("400::invalid_json") from exc
    if _SURROGATE_ESCAPE.search(text) and not _encodable(decoded):
        # A lone surrogate (``"\ud800"``) cannot be written as UTF-8: echoed or broadcast, it
        # would break the reply of every receiver. Refused as the Chat API refuses it.
        raise BatchError("400::invalid_json")
    if isinstance(decoded, dict):
        return [decoded]
    if isinstance(decoded, list) and decoded:
        return decoded
    raise BatchError("400::invalid_batch")


def _encodable(value: Any) -> bool:
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def message_json(channel: str, data: Any) -> str:
    """A delivered message, serialized once for all its receivers.

    Raises ValueError when ``data`` holds a lone surrogate, which has no UTF-8 form.
    """
    text = dumps({"channel": channel, "data": data})
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as exc:
            raise ValueError("data holds a lone surrogate") from exc
    return text


def reply_to(message: Mapping[str, Any], channel: str, **fields: Any) -> dict[str, Any]:
    """A reply on ``channel`` echoing the message's ``id`` (clients match replies by it)."""
    reply: dict[str, Any] = {"channel": channel}
    if "id" in message:
        reply["id"] = message["id"]
    reply.update(fields)
    return reply


_ENCODE = json.JSONEncoder(separators=(",", ":"), ensure_ascii=False).encode
"""One encoder for every message: json.dumps with options builds a new one per call."""


def dumps(value: Any) -> str:
    return _ENCODE(value)


def error_batch(error: str) -> str:
    """A whole reply for a body that has no message to answer: still a non-empty JSON array."""
    return dumps([{"channel": ERROR_CHANNEL, "successful": False, "error": error}])


def join(parts: list[str]) -> str:
    """A JSON array from already serialized elements (broadcasts are serialized once)."""
    return "[" + ",".join(parts) + "]"
