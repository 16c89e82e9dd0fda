"""``httpcb`` (docs/callbacks.md §5, §7.4): the device id is a URL; the notification's body is
POSTed to it bare, as JSON (a rendering ``{"text/plain": "<text>"}``: that text, as
``text/plain``), with Standard Webhooks headers.

- ``webhook-id`` is the notification's message id, the same on every try (the platform keeps
  it); ``webhook-timestamp`` the time of this try; ``webhook-signature`` when the group's (or
  named provider's, or ``debug.``) ``customhttp.signing_secret`` is set.
- ``Authorization`` is only the destination's own (a subscription's ``authorization``), never
  the group's ``customhttp.authorization``: the URL is the customer's, not the operator's
  receiver.
- The URL must be an http(s) URL of at most ``max_url_chars`` characters without user name or
  password, and its host must not be (or resolve to) a loopback, private, link-local or other
  non-global address, unless ``[provider_options.httpcb] allow_private_addresses = true`` (tests,
  a receiver inside the operator's network). A refused URL is a permanent failure, not tried.
  Which URLs a request may name at all is the callback API's rule (``[callback]
  httpcb_allowed_prefixes``); this one holds for every URL, configured ones too.
- Outcomes, timeouts, the bounded answer and ``Retry-After`` are custom HTTP's
  (``providers/customhttp.py``); redirects are not followed.

A chat's notifications are not sent this way (a chat's device types are the others).
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import socket
import time
from typing import Annotated

import aiohttp
import yarl
from pydantic import BaseModel, ConfigDict, Field

from chatpush.clock import Clock
from chatpush.config import DeliverySettings
from chatpush.providers.base import Notification, ProviderContext, SendResult, Target
from chatpush.providers.customhttp import MAX_ERROR_CHARS, CustomHttpProvider, sign
from chatpush.providers.envelope import TEXT_PLAIN
from chatpush.providers.http import HttpClient
from chatpush.providers.outbound import OutboundError, read_capped
from chatpush.providers.registry import register

JSON = "application/json"


class HttpcbOptions(BaseModel):
    """``[provider_options.httpcb]``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    allow_private_addresses: bool = False
    """True: URLs whose host is loopback, private or link-local are sent to as well."""
    max_url_chars: Annotated[int, Field(ge=32, le=8192)] = 2048


def url_problem(url: str, max_chars: int) -> str | None:
    """Why ``url`` is not an httpcb URL at all (shape only, no lookup), or None."""
    if len(url) > max_chars:
        return f"an httpcb URL is at most {max_chars} characters"
    try:
        parsed = yarl.URL(url)
    except (ValueError, TypeError):
        return "not a URL"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return "not an http(s) URL"
    if parsed.user is not None or parsed.password is not None:
        return "a URL with a user name or password is not allowed"
    return None


def is_public(address: str) -> bool:
    """Whether ``address`` (an IP address) is a global one (not loopback, private, link-local,
    multicast, reserved or unspecified; an IPv4-mapped IPv6 address as its IPv4 one)."""
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_global and not ip.is_multicast


@register
class HttpcbProvider(CustomHttpProvider):
    device_type = "httpcb"
    settings_model = HttpcbOptions

    def __init__(
        self,
        settings: DeliverySettings,
        clock: Clock | None = None,
        http: HttpClient | None = None,
        options: HttpcbOptions | None = None,
    ) -> None:
        super().__init__(settings, clock, http)
        self._options = options or HttpcbOptions()

    @classmethod
    def create(cls, context: ProviderContext) -> HttpcbProvider:
        options = cls.options(context.settings)
        assert isinstance(options, HttpcbOptions)
        return cls(context.settings.delivery, context.clock, context.http, options)

    async def refused(self, url: str) -> str | None:
        """Why nothing may be sent to ``url`` (shape, then every address its host resolves to),
        or None. Resolving here and again on connecting leaves a window to a host whose
        addresses change in between (DNS rebinding): allow-list URL prefixes (``[callback]
        httpcb_allowed_prefixes``) of hosts you trust."""
        problem = url_problem(url, self._options.max_url_chars)
        if problem is not None or self._options.allow_private_addresses:
            return problem
        parsed = yarl.URL(url)
        host = (parsed.host or "").strip("[]")
        try:
            addresses = [host] if _is_ip(host) else await _resolve(host, parsed.port or 443)
        except OSError:
            return None  # unresolvable: the connection fails as any other (temporary)
        blocked = [address for address in addresses if not is_public(address)]
        if blocked:
            return f"{host} is a loopback, private or link-local address: not sent to"
        return None

    async def send(
        self,
        target: Target,
        notification: Notification,
        *,
        now_s: int,
        node_slot: asyncio.Semaphore | None = None,
    ) -> SendResult:
        url = target.device_id
        if notification.source == "chat":
            # A chat client names its own device id: no chat posts to a URL of its choosing.
            return SendResult("failed", 0, error="httpcb: not for chats", temporary=False)
        if url is None:
            return SendResult("failed", 0, error="httpcb: no URL (device id)", temporary=False)
        problem = await self.refused(url)
        if problem is not None:
            return SendResult("failed", 0, error=f"httpcb: {problem}", temporary=False)
        waiting = self._backing_off(url)
        if waiting is not None:
            return waiting
        body = notification.renderings.get(self.device_type, notification.body)
        text = body.get(TEXT_PLAIN) if len(body) == 1 else None
        if isinstance(text, str):
            payload, content_type = text.encode(), "text/plain; charset=utf-8"
        else:
            payload, content_type = json.dumps(body, separators=(",", ":")).encode(), JSON
        message_id = notification.message_id
        headers = {
            "Content-Type": content_type,
            "webhook-id": message_id,
            "webhook-timestamp": str(now_s),
        }
        if target.signing_secret is not None:
            headers["webhook-signature"] = sign(target.signing_secret, message_id, now_s, payload)
        if target.destination_authorization is not None:
            headers["Authorization"] = target.destination_authorization
        async with self._per_receiver[url], node_slot or contextlib.nullcontext():
            started = time.monotonic()
            try:
                async with self._http.session.post(
                    url, data=payload, headers=headers, allow_redirects=False, timeout=self._timeout
                ) as reply:
                    await read_capped(reply, self._settings.max_answer_bytes, "httpcb receiver")
                    latency_ms = int((time.monotonic() - started) * 1000)
                    if 200 <= reply.status < 300:
                        return SendResult("sent", latency_ms, http_status=reply.status)
                    return self._refusal(
                        url, reply.status, reply.headers.get("Retry-After"), latency_ms
                    )
            except OutboundError as exc:
                return exc.result(started)
            except TimeoutError:
                error = f"timed out after {self._settings.total_timeout_s:g} s"
            except (aiohttp.ClientError, OSError) as exc:
                error = f"{type(exc).__name__}: {exc}"[:MAX_ERROR_CHARS]
            return SendResult("failed", int((time.monotonic() - started) * 1000), error=error)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


async def _resolve(host: str, port: int) -> list[str]:
    loop = asyncio.get_running_loop()
    found = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in found]
