"""The client address that per-address limits count against."""

import pytest
from aiohttp.test_utils import make_mocked_request

from chatpush.addresses import TrustedProxies


def request(peer: str, *forwarded: str):  # type: ignore[no-untyped-def]
    headers = [("X-Forwarded-For", value) for value in forwarded]
    req = make_mocked_request("GET", "/", headers=headers)
    return req.clone(remote=peer)


def test_without_trusted_proxies_the_header_is_ignored() -> None:
    assert TrustedProxies().client_address(request("203.0.113.9", "1.2.3.4")) == "203.0.113.9"


def test_a_trusted_proxy_forwards_for_the_nearest_untrusted_hop() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    # The client wrote "1.2.3.4" itself; the proxy chain appended the real address.
    forwarded = request("10.0.0.2", "1.2.3.4, 198.51.100.7, 10.0.0.1")
    assert proxies.client_address(forwarded) == "198.51.100.7"


def test_an_untrusted_peer_cannot_choose_its_address() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    assert proxies.client_address(request("203.0.113.9", "198.51.100.7")) == "203.0.113.9"


def test_only_proxies_in_the_header_leaves_the_peer() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    assert proxies.client_address(request("10.0.0.2", "10.0.0.3")) == "10.0.0.2"


def test_ipv6_clients_count_as_their_network_and_mapped_ipv4_as_ipv4() -> None:
    proxies = TrustedProxies()
    assert proxies.client_address(request("2001:db8:1:1::7")) == "2001:db8:1:1::/64"
    assert proxies.client_address(request("2001:db8:1:1:ffff::1")) == "2001:db8:1:1::/64"
    assert proxies.client_address(request("::ffff:198.51.100.7")) == "198.51.100.7"
    wider = TrustedProxies(ipv6_prefix_length=56)
    assert wider.client_address(request("2001:db8:1:ff::7")) == "2001:db8:1::/56"
    forwarded = TrustedProxies(["10.0.0.0/8"]).client_address(
        request("10.0.0.2", "2001:db8:1:1::9")
    )
    assert forwarded == "2001:db8:1:1::/64"


@pytest.mark.parametrize(
    ("hop", "client"),
    [
        ("198.51.100.7:1001", "198.51.100.7"),
        ("198.51.100.7:1002", "198.51.100.7"),
        ("[2001:db8:a:3::1]", "2001:db8:a:3::/64"),
        ("[2001:db8:a:3::2]:443", "2001:db8:a:3::/64"),
        ("2001:db8:a:3::3", "2001:db8:a:3::/64"),
    ],
)
def test_a_port_or_brackets_written_by_a_proxy_do_not_make_a_new_client(
    hop: str, client: str
) -> None:
    """Some proxies write the client's port too: the port is the client's to choose."""
    proxies = TrustedProxies(["10.0.0.0/8"])
    assert proxies.client_address(request("10.0.0.2", hop)) == client
