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
