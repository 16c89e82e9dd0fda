"""PostgreSQL refusing connections is an outage: 503 "retry later", never a 500."""

from __future__ import annotations

import secrets
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

from chatpush.api.keys import DATABASE
from chatpush.config import Settings
from tests import postgres as pg


@pytest.fixture
def db_url(pg_url: str) -> str:
    return pg_url


@pytest.fixture
def role_url(pg_url: str) -> Iterator[tuple[str, str]]:
    """(role, URL): the test database reached as a role of its own."""
    role = f"chatpush_role_{secrets.token_hex(4)}"
    pg.admin(f"CREATE ROLE {role} LOGIN")
    pg.execute(
        pg_url,
        f"GRANT ALL ON ALL TABLES IN SCHEMA public TO {role}",
        f"GRANT ALL ON ALL SEQUENCES IN SCHEMA public TO {role}",
    )
    parts = urlsplit(pg_url)
    netloc = role + "@" + parts.netloc.rsplit("@", 1)[-1]
    try:
        yield role, urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
    finally:
        pg.execute(pg_url, f"DROP OWNED BY {role}")
        pg.admin(f"DROP ROLE IF EXISTS {role}")


async def test_too_many_connections_is_a_503_and_service_resumes(
    role_url: tuple[str, str], make_settings: Callable[..., Settings], make_client: Any
) -> None:
    role, url = role_url
    client = await make_client(make_settings(database={"url": url}))
    form = {"nickname": "Customer"}
    assert (await client.post("/genesys/2/chat/support", data=form)).status == 200

    pg.admin(f"ALTER ROLE {role} CONNECTION LIMIT 0")
    await client.app[DATABASE].drop_connections()
    response = await client.post("/genesys/2/chat/support", data=form)
    body = await response.json()
    assert response.status == 503, body
    assert "Traceback" not in str(body)

    pg.admin(f"ALTER ROLE {role} CONNECTION LIMIT -1")
    assert (await client.post("/genesys/2/chat/support", data=form)).status == 200
