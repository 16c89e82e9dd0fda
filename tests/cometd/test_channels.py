"""Channel names and the subscription index, as pure functions."""

from __future__ import annotations

import pytest

from chatpush.cometd.channels import SubscriptionIndex, is_valid_channel


@pytest.mark.parametrize(
    ("name", "as_channel", "as_pattern"),
    [
        ("/a", True, True),
        ("/a/b-c_d.e~f", True, True),
        ("/_genesys/push/dev:ice-1", True, True),
        ("/service/chatV2/customer-support", True, True),
        ("/a/*", False, True),
        ("/a/**", False, True),
        ("/*", False, True),
        ("/**", False, True),
        ("/a/*/b", False, False),
        ("/a/b*", False, False),
        ("/a/***", False, False),
        ("/", False, False),
        ("", False, False),
        ("a/b", False, False),
        ("/a/", False, False),
        ("/a//b", False, False),
        ("/a b", False, False),
        ("/a\tb", False, False),
        ("/a\u2028", False, False),
        ("/" + "a" * 511, True, True),
        ("/" + "a" * 512, False, False),
    ],
)
def test_channel_names(name: str, as_channel: bool, as_pattern: bool) -> None:
    assert is_valid_channel(name, allow_wildcards=False) is as_channel
    assert is_valid_channel(name, allow_wildcards=True) is as_pattern


def test_index_matches_exact_one_segment_and_many_segment_patterns() -> None:
    index: SubscriptionIndex[str] = SubscriptionIndex()
    for pattern, who in [
        ("/a/b", "exact"),
        ("/a/*", "one"),
        ("/a/**", "many"),
        ("/*", "root-one"),
        ("/**", "root-many"),
        ("/a/b/*", "deep-one"),
    ]:
        index.add(pattern, who)
    index.add("/a/**", "exact")  # the same subscriber twice is reported once
    assert set(index.match("/a/b")) == {"exact", "one", "many", "root-many"}
    assert set(index.match("/a/b/c")) == {"exact", "many", "root-many", "deep-one"}
    assert set(index.match("/a")) == {"root-one", "root-many"}
    assert set(index.match("/ab")) == {"root-one", "root-many"}
    index.remove("/**", "root-many")
    index.remove("/*", "root-one")
    index.remove("/a/*", "nobody")
    assert set(index.match("/x")) == set()
    assert len(index) == 5
