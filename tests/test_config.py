"""CONFIG parsing: channels_redis's keys keep their meaning; bad values are named."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest
from channels_redis.serializers import JSONSerializer, registry

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


class PrefixPattern:
    """Not a ``re.Pattern``, but has ``match``: channels_redis takes such keys as they are."""

    def match(self, channel: str) -> bool:
        return channel.startswith("slow.")


def test_channel_capacity_accepts_any_pattern_object_with_match() -> None:
    config = build_config(capacity=7, channel_capacity={PrefixPattern(): 2})
    assert config.capacity_for("slow.x") == 2
    assert config.capacity_for("fast.x") == 7


def test_whole_number_floats_are_accepted_as_ints() -> None:
    # As settings read from the environment give them: typed Any, floats at run time.
    floats: dict[str, Any] = {
        "expiry": 60.0,
        "group_expiry": 3600.0,
        "capacity": 100.0,
        "channel_capacity": {"a.*": 5.0},
    }
    config = build_config(**floats)
    assert (config.expiry_s, config.group_expiry_s, config.capacity) == (60, 3600, 100)
    assert all(type(value) is int for value in (config.expiry_s, config.capacity))
    assert config.capacity_for("a.b") == 5
    assert type(config.capacity_for("a.b")) is int


def test_fractional_expiry_is_kept_to_the_millisecond() -> None:
    config = build_config(expiry=0.5)
    assert config.expiry_ms == 500
    assert config.key_ttl_s == 2  # whole seconds for EXPIRE: rounded up, plus the margin


@pytest.fixture
def custom_format() -> Iterator[str]:
    """A serializer format registered with channels_redis, as an application would."""

    class CustomSerializer(JSONSerializer):
        pass

    registry.register_serializer("test-custom", CustomSerializer)
    yield "test-custom"
    del registry._registry["test-custom"]


def test_serializer_format_registered_with_channels_redis_is_accepted(custom_format: str) -> None:
    assert build_config(serializer_format=custom_format).serializer_format == custom_format


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
        ("capacity", 2.5, "capacity must be a positive int, got 2.5"),
        ("capacity", -3.0, "capacity must be a positive int, got -3.0"),
        ("group_expiry", 0.5, "group_expiry must be a positive int, got 0.5"),
        ("expiry", 0.0, "expiry must be a positive int, got 0.0"),
        ("expiry", -0.5, "expiry must be at least 0.001 seconds, got -0.5"),
        ("expiry", 0.0001, "expiry must be at least 0.001 seconds, got 0.0001"),
        ("expiry", float("inf"), "expiry must be at least 0.001 seconds, got inf"),
        ("expiry", float("nan"), "expiry must be at least 0.001 seconds, got nan"),
        ("prefix", "", "prefix must be a non-empty str"),
        ("serializer_format", "pickle", "'pickle'"),
        ("serializer_format", ["json"], "['json']"),
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


# -- redis+sentinel:// URLs ------------------------------------------------------


def test_sentinel_url_decodes_to_the_channels_redis_sentinel_form() -> None:
    (host,) = decode_hosts(["redis+sentinel://user:p%40ss@s1:26380,s2:26381,s3/mymaster/2"])
    assert host == {
        "sentinels": [("s1", 26380), ("s2", 26381), ("s3", 26379)],
        "master_name": "mymaster",
        "db": 2,
        "username": "user",
        "password": "p@ss",
    }


def test_sentinel_url_options_go_to_the_master_or_with_prefix_to_the_sentinels() -> None:
    url = (
        "redis+sentinel://[::1]:5000,127.0.0.1/m?socket_timeout=7.5&health_check_interval=3"
        "&sentinel_socket_timeout=1&sentinel_password=sp"
    )
    (host,) = decode_hosts([url])
    assert host == {
        "sentinels": [("::1", 5000), ("127.0.0.1", 26379)],
        "master_name": "m",
        "socket_timeout": 7.5,
        "health_check_interval": 3,
        "sentinel_kwargs": {"socket_timeout": 1.0, "password": "sp"},
    }


def test_rediss_sentinel_url_uses_tls_to_master_and_sentinels_sharing_ssl_options() -> None:
    (host,) = decode_hosts(
        ["rediss+sentinel://:pw@s1:26379/m/0?ssl_ca_certs=/ca.crt&sentinel_ssl_ca_certs=/s.crt"]
    )
    assert host == {
        "sentinels": [("s1", 26379)],
        "master_name": "m",
        "db": 0,
        "password": "pw",
        "ssl": True,
        "ssl_ca_certs": "/ca.crt",
        "sentinel_kwargs": {"ssl": True, "ssl_ca_certs": "/s.crt"},
    }
    (shared,) = decode_hosts(["rediss+sentinel://s1/m?ssl_certfile=/c.crt"])
    assert shared["sentinel_kwargs"] == {"ssl": True, "ssl_certfile": "/c.crt"}


def test_sentinel_url_as_address_of_a_dict_keeps_the_other_keys() -> None:
    (host,) = decode_hosts(
        [{"address": "redis+sentinel://s1:1/m", "socket_timeout": 3, "sentinel_kwargs": {}}]
    )
    assert host == {
        "sentinels": [("s1", 1)],
        "master_name": "m",
        "socket_timeout": 3,
        "sentinel_kwargs": {},
    }


def test_other_url_forms_are_unchanged_beside_sentinel_urls() -> None:
    hosts = decode_hosts(
        ["redis://a:1/0", "rediss://b:2", "redis+cluster://c:3", "REDIS+SENTINEL://d/m"]
    )
    assert hosts[:3] == (
        {"address": "redis://a:1/0"},
        {"address": "rediss://b:2"},
        {"address": "redis+cluster://c:3"},
    )
    assert hosts[3] == {"sentinels": [("d", 26379)], "master_name": "m"}


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        ("redis+sentinel:///m", "no sentinel host"),
        ("redis+sentinel://s1:26379", "no master"),
        ("redis+sentinel://s1:26379/", "no master"),
        ("redis+sentinel://s1:port/m", "cannot read sentinel 's1:port'"),
        ("redis+sentinel://s1/m/zero", "db must be a number"),
        ("redis+sentinel://s1/m?socket_timeout=soon", "socket_timeout"),
    ],
)
def test_bad_sentinel_urls_are_refused_naming_the_problem(url: str, complaint: str) -> None:
    with pytest.raises(ConfigurationError, match=re.escape(complaint)):
        decode_hosts([url])


def test_sentinel_url_errors_do_not_show_passwords() -> None:
    with pytest.raises(ConfigurationError) as caught:
        decode_hosts(["redis+sentinel://u:secret@s1/?sentinel_password=hidden"])
    assert "secret" not in str(caught.value)
    assert "hidden" not in str(caught.value)
    assert "u:***@s1" in str(caught.value)


@pytest.mark.parametrize(
    "hosts",
    [
        ["redis+sentinel://s1?sentinel_password=hunter2"],
        ["redis+sentinel://:hunter2@s1:26379x?password=hunter2/mymaster"],
        [{"address": "redis+sentinel://:hun/ter2@s1/mymaster"}],
        ["redis+sentinel://u:p@ss@s1/?sentinel_password=a@b/c"],
    ],
)
def test_sentinel_url_errors_mask_passwords_anywhere_in_the_url(hosts: list[object]) -> None:
    with pytest.raises(ConfigurationError) as caught:
        decode_hosts(hosts)
    message = str(caught.value)
    assert "***" in message
    for piece in ("hunter2", "hun", "ter2", "p@ss", "a@b"):
        assert piece not in message
