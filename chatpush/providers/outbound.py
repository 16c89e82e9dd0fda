"""What every outbound request of the providers obeys: allowed destinations, bounded answers.

FCM and APNs requests (the token endpoint of stored credentials included) go only to
``mobile.allowed_hosts``: https, or plain http to a host listed as ``http://``. No request follows
a redirect, and no answer is read past a size limit (``mobile.max_answer_bytes``,
``delivery.max_answer_bytes``), undecoded (``Accept-Encoding: identity``), so a large or
compressed answer costs no memory. What goes back to an API caller is the provider's own error
fields, truncated; the detail of a connection failure is logged here, not returned.
"""

from __future__ import annotations

import email.utils
import logging
import math
import time
from collections.abc import Sequence

import aiohttp
import yarl

from chatpush.providers.result import SendResult

log = logging.getLogger("chatpush.outbound")

NO_COMPRESSION = {"Accept-Encoding": "identity"}
MAX_FIELD_CHARS = 200
"""The most of one error field of a provider's answer (FCM ``error.message``, APNs ``reason``)."""
UNREACHABLE = "unreachable (no connection, or no answer in time)"


MAX_ERROR_CHARS = 300


class OutboundError(Exception):
    """A request that could not be made, or an answer that cannot be used: a failed send."""

    def __init__(self, message: str, *, temporary: bool, http_status: int | None = None):
        super().__init__(message)
        self.temporary = temporary
        self.http_status = http_status

    def result(self, started_monotonic: float) -> SendResult:
        """This failure as a send's verdict, timed from ``started_monotonic``."""
        return SendResult(
            "failed",
            int((time.monotonic() - started_monotonic) * 1000),
            http_status=self.http_status,
            error=str(self)[:MAX_ERROR_CHARS],
            temporary=self.temporary,
        )


def retry_after_seconds(value: str | None, now_s: float) -> float | None:
    """A ``Retry-After`` header (RFC 9110 §10.2.3) as seconds from ``now_s``: delay-seconds, or
    an HTTP-date (a date in the past is 0). None when absent or unreadable."""
    if value is None:
        return None
    text = value.strip()
    if text.isascii() and text.isdigit():
        return float(min(int(text[:12]), 10**9))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # RFC 9110: HTTP-dates are UTC
        return None
    seconds = when.timestamp() - now_s
    return max(0.0, seconds) if math.isfinite(seconds) else None


def disallowed(url: str | yarl.URL, allowed: Sequence[str]) -> str | None:
    """Why ``url`` may not be requested (``scheme://host:port is not allowed ...``), or None.

    ``allowed`` holds ``scheme://host:port`` entries (``mobile.allowed_hosts``, normalised): the
    scheme, host and port must all be one entry's."""
    try:
        target = yarl.URL(str(url))
    except (ValueError, TypeError):
        return "not a URL"
    scheme = target.scheme.lower()
    host = (target.host or "").lower().rstrip(".")
    if scheme not in ("http", "https") or not host:
        return "not an http(s) URL"
    if target.user is not None or target.password is not None:
        return "a URL with a user name or password is not allowed"
    port = target.port
    for entry in allowed:
        origin = yarl.URL(entry)
        if (origin.scheme, origin.host, origin.port) == (scheme, host, port):
            return None
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port} is not in mobile.allowed_hosts"


def error_field(value: object) -> str:
    """One error field of a provider's answer as it may be shown: text, printable, truncated."""
    text = "".join(ch if ch.isprintable() else " " for ch in str(value)).strip()
    return text[:MAX_FIELD_CHARS]


async def read_capped(reply: aiohttp.ClientResponse, limit: int, where: str) -> bytes:
    """The answer's body, or OutboundError (permanent) once it is over ``limit`` bytes."""
    if reply.content_length is not None and reply.content_length > limit:
        raise too_large(where, limit, reply.status)
    body = bytearray()
    async for chunk in reply.content.iter_chunked(16384):
        body += chunk
        if len(body) > limit:
            raise too_large(where, limit, reply.status)
    return bytes(body)


def too_large(where: str, limit: int, status: int) -> OutboundError:
    """The failure of an answer over ``limit`` bytes (permanent: a resend gets the same)."""
    return OutboundError(
        f"{where}: answer ({status}) over {limit} bytes, not read",
        temporary=False,
        http_status=status,
    )


def unreachable(where: str, url: str | yarl.URL, exc: BaseException) -> str:
    """The error shown for a failed connection or a timeout (the same for both, so that it
    tells nothing of a port); the detail goes to the log."""
    target = yarl.URL(str(url))
    log.warning(
        "%s: %s:%s unreachable: %s: %s",
        where,
        target.host,
        target.port,
        type(exc).__name__,
        exc,
        extra={"action": "provider_unreachable", "host": target.host},
    )
    return f"{where}: {UNREACHABLE}"
