"""``mobile.allowed_hosts``: how entries are read, and which URLs they allow."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from chatpush.config import MobileSettings
from chatpush.providers.outbound import disallowed


def test_entries_are_origins_with_a_port_https_unless_written_http() -> None:
    given = ["FCM.example.com.", "push.example.com:2197", "http://127.0.0.1:8080", "[::1]:8443"]
    assert MobileSettings(allowed_hosts=given).allowed_hosts == (
        "https://fcm.example.com:443",
        "https://push.example.com:2197",
        "http://127.0.0.1:8080",
        "https://[::1]:8443",
    )


@pytest.mark.parametrize(
    "entry",
    ["", "ftp://a.example", "https://a.example/path", "https://u@a.example", "a.example:99999"],
)
def test_an_entry_that_is_not_just_an_origin_stops_start_up(entry: str) -> None:
    with pytest.raises(ValidationError, match="a host name, or https://host"):
        MobileSettings(allowed_hosts=[entry])


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("https://fcm.example.com/v1/x", None),
        ("https://FCM.Example.com./v1/x", None),
        ("https://fcm.example.com:443/", None),
        ("http://127.0.0.1:8080/token", None),
        ("http://fcm.example.com/", "http://fcm.example.com:80 is not in mobile.allowed_hosts"),
        (
            "https://fcm.example.com:22/",
            "https://fcm.example.com:22 is not in mobile.allowed_hosts",
        ),
        ("https://127.0.0.1:8080/", "https://127.0.0.1:8080 is not in mobile.allowed_hosts"),
        ("http://127.0.0.1:8081/", "http://127.0.0.1:8081 is not in mobile.allowed_hosts"),
        ("http://169.254.169.254/", "http://169.254.169.254:80 is not in mobile.allowed_hosts"),
        (
            "https://fcm.example.com@evil.example/",
            "a URL with a user name or password is not allowed",
        ),
        (
            "https://evil.example#@fcm.example.com/",
            "https://evil.example:443 is not in mobile.allowed_hosts",
        ),
        ("file:///etc/passwd", "not an http(s) URL"),
    ],
)
def test_only_the_listed_scheme_host_and_port_are_allowed(url: str, why: str | None) -> None:
    allowed = MobileSettings(allowed_hosts=["fcm.example.com", "http://127.0.0.1:8080"])
    assert disallowed(url, allowed.allowed_hosts) == why
