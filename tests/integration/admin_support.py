"""The admin console over HTTP, as a browser without JavaScript uses it: pages, forms, cookies."""

from __future__ import annotations

import html
import re
from typing import Any

from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient
from cryptography.fernet import Fernet

from tests.conftest import API_KEY

Client = TestClient[web.Request, web.Application]

ADMIN_KEY = "ops-admin-key-0123456789"
BOT_KEY = "bot-chat-server-key-0123"
CREDENTIALS_KEY = Fernet.generate_key().decode()

SECURITY = {
    "api_keys": [API_KEY],
    "keys": [
        {"name": "ops", "key": ADMIN_KEY, "scopes": ["admin"]},
        {"name": "bot", "key": BOT_KEY, "scopes": ["chat-server"]},
    ],
    "credentials_key": CREDENTIALS_KEY,
}

_CSRF = re.compile(r'name="csrf" value="([^"]*)"')


def text_of(page: str) -> str:
    """The page's text with tags dropped and white space collapsed (what a reader sees)."""
    without_tags = re.sub(r"<[^>]+>", " ", page)
    return " ".join(html.unescape(without_tags).split())


class Console:
    def __init__(self, client: Client) -> None:
        self.client = client
        self.csrf = ""

    async def login(self, key: str = ADMIN_KEY) -> ClientResponse:
        return await self.client.post("/admin/login", data={"key": key}, allow_redirects=False)

    async def page(self, path: str, expect: int = 200) -> str:
        response = await self.client.get(path, allow_redirects=False)
        body = await response.text()
        assert response.status == expect, (response.status, body[:2000])
        found = _CSRF.search(body)
        if found:
            self.csrf = found.group(1)
        return body

    async def post(
        self, path: str, data: dict[str, Any] | None = None, *, csrf: str | None = None
    ) -> ClientResponse:
        form = dict(data or {})
        form["csrf"] = self.csrf if csrf is None else csrf
        return await self.client.post(path, data=form, allow_redirects=False)

    async def logged_in(self) -> Console:
        response = await self.login()
        assert response.status == 303, await response.text()
        await self.page("/admin/")
        return self
