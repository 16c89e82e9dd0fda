"""Presence, optional (``agents.presence_url``; off by default): an agent whose presence is one of
``agents.presence_suppress`` (``offline``, ``away``, ``onACall``) is not rung.

The presence source answers as the contact centre's presence API does
(``GET /api/v2/users/{userId}/presence``)::

    {"currentPresence": {"presenceStatus": {"id": "offline", "name": "Offline"}}}

It is a soft filter (docs/agents.md, "Presence"): presence lags the routing engine by seconds,
so a source that does not answer within ``presence_timeout_s``, answers an error, or answers
something else, lets the ring through. Every suppression is logged and in the trail.
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Iterable
from urllib.parse import quote

import aiohttp

from chatpush.config import AgentSettings

log = logging.getLogger("chatpush.agents.presence")

MAX_LOOKUPS_AT_ONCE = 32
MAX_ANSWER_BYTES = 65_536


class PresenceSource:
    def __init__(self, settings: AgentSettings) -> None:
        assert settings.presence_url is not None
        self._url = settings.presence_url
        token = settings.presence_token
        self._headers = (
            {} if token is None else {"Authorization": f"Bearer {token.get_secret_value()}"}
        )
        self._timeout = aiohttp.ClientTimeout(total=settings.presence_timeout_s)
        self._session: aiohttp.ClientSession | None = None
        self._slots = asyncio.Semaphore(MAX_LOOKUPS_AT_ONCE)

    async def start(self) -> None:
        self._session = aiohttp.ClientSession(timeout=self._timeout, headers=self._headers)

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()

    async def status(self, user_id: str) -> str | None:
        """The agent's presence id, or None when the source did not say (the ring goes)."""
        if self._session is None:
            return None
        url = self._url.replace("{userId}", quote(user_id, safe=""))
        try:
            async with self._slots, self._session.get(url) as response:
                if response.status != 200:
                    log.info(
                        "presence of %s: answered %d; ringing",
                        user_id,
                        response.status,
                        extra={"action": "agent_presence_unknown", "status": response.status},
                    )
                    return None
                body = await response.content.read(MAX_ANSWER_BYTES)
                payload = json.loads(body)
        except (aiohttp.ClientError, TimeoutError, ValueError, UnicodeDecodeError) as exc:
            log.info(
                "presence of %s unknown (%s); ringing",
                user_id,
                type(exc).__name__,
                extra={"action": "agent_presence_unknown"},
            )
            return None
        try:
            found = payload["currentPresence"]["presenceStatus"]["id"]
        except (KeyError, TypeError):
            return None
        return found if isinstance(found, str) else None

    async def statuses(self, user_ids: Iterable[str]) -> dict[str, str | None]:
        unique = list(dict.fromkeys(user_ids))
        found = await asyncio.gather(*(self.status(user) for user in unique))
        return dict(zip(unique, found, strict=True))
