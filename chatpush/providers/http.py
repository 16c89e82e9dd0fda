"""The app's one HTTP/1.1 client session, shared by the providers that speak HTTP/1.1 (custom
HTTP, FCM). Each request sets its own timeouts; APNs keeps its own HTTP/2 client.

No connection limit of its own (the custom HTTP provider bounds requests per receiver and per
node); answers are never decompressed (``Accept-Encoding: identity``, chatpush/providers/
outbound.py reads them capped).
"""

from __future__ import annotations

import json

import aiohttp

from chatpush.providers.outbound import NO_COMPRESSION


class HttpClient:
    def __init__(self) -> None:
        self._session: aiohttp.ClientSession | None = None

    async def start(self) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(limit=0, limit_per_host=0),
                json_serialize=json.dumps,
                headers=NO_COMPRESSION,
                auto_decompress=False,
            )

    async def close(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    @property
    def session(self) -> aiohttp.ClientSession:
        assert self._session is not None, "HttpClient.start() was not awaited"
        return self._session

    @property
    def started(self) -> bool:
        return self._session is not None
