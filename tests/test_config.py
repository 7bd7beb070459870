"""CONFIG parsing: channels_redis's keys keep their meaning; bad values are named."""

from __future__ import annotations

import re

import pytest

from streams_layer.config import DEFAULT_CAPACITY, build_config, decode_hosts
from streams_layer.exceptions import ConfigurationError


def test_hosts_forms_decode_like_channels_redis() -> None:
    hosts = decode_hosts(
        [
            "redis://:secret@127.0.0.1:6380/2",
            ("10.0.0.1", 6379),
            {"address": "rediss://cache:6379", "ssl_ca_certs": "/ca.pem"},
            {"sentinels": [("127.0.0.1", 26379)], "master_name": "mymaster"},
        ]
    )
    assert hosts == (
        {"address": "redis://:secret@127.0.0.1:6380/2"},
        {"host": "10.0.0.1", "port": 6379},
        {"address": "rediss://cache:6379", "ssl_ca_certs": "/ca.pem"},
        {"sentinels": [("127.0.0.1", 26379)], "master_name": "mymaster"},
    )


def test_hosts_default_to_localhost() -> None:
    assert decode_hosts(None) == ({"address": "redis://localhost:6379"},)


@pytest.mark.parametrize("hosts", ["redis://localhost", b"redis://localhost", 42, [object()]])
def test_hosts_of_wrong_shape_are_refused(hosts: object) -> None:
    with pytest.raises(ConfigurationError, match="host"):
        decode_hosts(hosts)


def test_channel_capacity_accepts_globs_and_compiled_patterns_in_order() -> None:
    config = build_config(capacity=7, channel_capacity={"http.*": 50, re.compile(r"^ws\.\d+$"): 3})
    assert config.capacity_for("http.request") == 50
    assert config.capacity_for("ws.12") == 3
    assert config.capacity_for("ws.x") == 7


def test_defaults_match_channels_redis() -> None:
    config = build_config()
    assert (config.prefix, config.expiry_s, config.group_expiry_s) == ("asgi", 60, 86400)
    assert config.capacity == DEFAULT_CAPACITY == 100
    assert config.serializer_format == "msgpack"


@pytest.mark.parametrize(
    ("key", "value", "named"),
    [
        ("capacity", 0, "capacity must be a positive int, got 0"),
        ("capacity", "100", "got '100'"),
        ("expiry", -1, "expiry must be a positive int, got -1"),
        ("group_expiry", True, "group_expiry must be a positive int, got True"),
        ("prefix", "", "prefix must be a non-empty str"),
        ("serializer_format", "pickle", "'pickle'"),
        ("symmetric_encryption_keys", "one-key", "list of keys"),
        ("channel_capacity", {"x": 0}, "channel_capacity value must be a positive int, got 0"),
    ],
)
def test_bad_values_raise_configuration_error_naming_them(
    key: str, value: object, named: str
) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(named)):
        build_config(**{key: value})  # type: ignore[arg-type]


def test_unknown_config_key_is_refused() -> None:
    with pytest.raises(TypeError, match="no_such_key"):
        build_config(no_such_key=1)  # type: ignore[call-arg]


def test_random_prefix_length_is_accepted_for_compatibility() -> None:
    assert build_config(random_prefix_length=12).capacity == DEFAULT_CAPACITY
