"""``server.cors_origins`` and ``server.cors_admin_origins``: written as a browser sends
``Origin``, checked at start-up with a message that says what is wrong and how to write it."""

from __future__ import annotations

import pytest

from chatpush.config import ConfigError, load_settings


@pytest.mark.parametrize(
    ("written", "kept"),
    [
        ("https://shop.example.com", "https://shop.example.com"),
        ("HTTPS://Shop.Example.COM", "https://shop.example.com"),
        ("https://shop.example.com:443", "https://shop.example.com"),
        ("http://localhost:80", "http://localhost"),
        ("http://localhost:8000", "http://localhost:8000"),
        ("https://[::1]:8443", "https://[::1]:8443"),
        ("*", "*"),
    ],
)
def test_origins_are_kept_as_a_browser_sends_them(written: str, kept: str) -> None:
    settings = load_settings(None, server={"cors_origins": [written]})
    assert settings.server.cors_origins == [kept]


@pytest.mark.parametrize(
    ("written", "says"),
    [
        ("shop.example.com", "not an origin"),
        ("ftp://shop.example.com", "not an origin"),
        ("https://", "not an origin"),
        ("null", "not an origin"),
        ("https://shop.example.com/", "no path"),
        ("https://shop.example.com/widget", "no path"),
        ("https://shop.example.com?x=1", "no path"),
        ("https://*.example.com", "wildcard"),
        ("https://user:pw@shop.example.com", "no user"),
        ("https://shop.example.com:99999", "not an origin"),
    ],
)
def test_a_malformed_origin_stops_start_up_with_a_clear_message(written: str, says: str) -> None:
    for key in ("cors_origins", "cors_admin_origins"):
        with pytest.raises(ConfigError) as raised:
            load_settings(None, server={key: [written]})
        message = str(raised.value)
        assert f"server.{key}" in message and says in message, message
        assert "https://shop.example.com" in message  # how to write it


def test_any_origin_only_alone_and_never_for_the_api() -> None:
    with pytest.raises(ConfigError, match=r"server\.cors_origins.*list it alone"):
        load_settings(None, server={"cors_origins": ["*", "https://shop.example.com"]})
    with pytest.raises(ConfigError, match=r"server\.cors_admin_origins.*exact origins"):
        load_settings(None, server={"cors_admin_origins": ["*"]})


def test_the_environment_sets_them_too(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CHATPUSH_SERVER__CORS_ORIGINS", '["https://shop.example.com"]')
    assert load_settings(None).server.cors_origins == ["https://shop.example.com"]


@pytest.mark.parametrize(
    ("before", "after"),
    [
        (None, "Origin"),
        ("Accept-Encoding", "Accept-Encoding, Origin"),
        ("accept-encoding, origin", "accept-encoding, origin"),
    ],
)
def test_vary_gets_origin_once(before: str | None, after: str) -> None:
    from aiohttp import web

    from chatpush.api.cors import _add_vary

    response = web.Response()
    if before is not None:
        response.headers["Vary"] = before
    _add_vary(response, "Origin")
    assert response.headers["Vary"] == after
