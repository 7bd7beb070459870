"""Key names: one hash tag per stream, every key under the prefix."""

from __future__ import annotations

import pytest

from streams_layer.exceptions import InvalidChannelNameError
from streams_layer.keys import KeySpace, client_of


def test_keys_share_the_hash_tag_of_their_stream() -> None:
    keys = KeySpace("asgi")
    assert keys.inbox("abc") == "asgi:inbox:{abc}"
    assert keys.inbox_counts("abc") == "asgi:inbox:{abc}:n"
    assert keys.channel("statistic") == "asgi:chan:{statistic}"
    assert keys.group("room") == "asgi:group:{room}"
    assert keys.history("room") == "asgi:history:{room}"
    assert keys.dead("statistic") == "asgi:dead:{statistic}"


def test_process_specific_channels_route_to_their_owners_inbox() -> None:
    keys = KeySpace("p")
    assert client_of("specific.c0ffee!xyz") == "c0ffee"
    assert client_of("a.b.c0ffee!") == "c0ffee"
    assert keys.destination("specific.c0ffee!xyz") == "p:inbox:{c0ffee}"
    assert keys.destination("statistic") == "p:chan:{statistic}"
    assert keys.hash_tag("x.c0ffee!1") == keys.hash_tag("y.c0ffee!2") == "c0ffee"


def test_client_of_a_normal_channel_is_an_error() -> None:
    with pytest.raises(InvalidChannelNameError, match="statistic"):
        client_of("statistic")


def test_scan_pattern_escapes_glob_characters_of_the_prefix() -> None:
    assert KeySpace("a*b?").match_all == "a\\*b\\?:*"
    assert KeySpace("asgi").match_all == "asgi:*"


def test_parse_recognises_only_keys_built_here() -> None:
    keys = KeySpace("asgi")
    assert keys.parse("asgi:chan:{statistic}") == ("chan", "statistic")
    assert keys.parse("asgi:inbox:{abc}:n") == ("inbox", "abc")
    assert keys.parse("other:chan:{x}") is None
    assert keys.parse("asgi:bogus:{x}") is None
    assert keys.parse("asgi:chan:x") is None
    assert keys.parse("asgi:group:{room}:v") == ("group", "room")
    assert keys.parse("asgi:history:{room}:trimmed") == ("history", "room")
    # A longer prefix's keys: "asgi:chan" + ":chan:{x}", "asgi:v2" + ":chan:{x}".
    assert keys.parse("asgi:chan:chan:{x}") is None
    assert keys.parse("asgi:v2:chan:{x}") is None
    assert keys.parse("asgi:chan:{x}:chan:{y}") is None
