"""CONFIG parity with channels_redis: hosts in every form, sharding, prefix, formats, encryption."""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Iterator
from typing import Any

import pytest
import redis.asyncio
from channels.exceptions import ChannelFull
from channels_redis.serializers import JSONSerializer, registry

from devtools.redis_servers import RedisServer
from streams_layer.exceptions import StreamsLayerError
from tests.layer_helpers import (
    LayerFactory,
    keys_under,
    layer_class,
    queued_entries,
    raw_stream_bytes,
    receive_within,
    receives_nothing,
)

PASSWORD = "s3cret-pass"
KEY_A = "first-key-for-fernet"
KEY_B = "second-key-for-fernet"
KEY_WRONG = "a-key-nobody-used"
SECRET_TEXT = "attack at dawn 7f3a"


@pytest.fixture
def password_redis() -> Iterator[RedisServer]:
    with RedisServer(extra_args=("--requirepass", PASSWORD)) as server:
        yield server


async def _round_trip(layer: Any) -> None:
    """A normal channel, a process-specific channel and a group all work."""
    specific = await layer.new_channel()
    await layer.send("config.normal", {"type": "x", "n": 1})
    await layer.send(specific, {"type": "x", "n": 2})
    await layer.group_add("config-group", specific)
    await layer.group_send("config-group", {"type": "x", "n": 3})
    assert (await receive_within(layer, "config.normal"))["n"] == 1
    assert (await receive_within(layer, specific))["n"] == 2
    assert (await receive_within(layer, specific))["n"] == 3


async def _keys_in_db(
    host: str, port: int, db: int, prefix: str, password: str | None = None
) -> int:
    client = redis.asyncio.Redis(host=host, port=port, db=db, password=password)
    try:
        return len(await keys_under(client, prefix))
    finally:
        await client.aclose()


async def test_url_with_password_and_db(
    make_layer: LayerFactory, password_redis: RedisServer, prefix: str
) -> None:
    host, port = password_redis.host, password_redis.port
    layer = make_layer(hosts=[f"redis://:{PASSWORD}@{host}:{port}/3"])
    await _round_trip(layer)
    assert await _keys_in_db(host, port, 3, prefix, PASSWORD) > 0
    assert await _keys_in_db(host, port, 0, prefix, PASSWORD) == 0


async def test_host_port_tuple(make_layer: LayerFactory, redis_server: RedisServer) -> None:
    await _round_trip(make_layer(hosts=[(redis_server.host, redis_server.port)]))


async def test_host_port_list(make_layer: LayerFactory, redis_server: RedisServer) -> None:
    await _round_trip(make_layer(hosts=[[redis_server.host, redis_server.port]]))


async def test_dict_with_address_and_connection_kwargs(
    make_layer: LayerFactory, password_redis: RedisServer, prefix: str
) -> None:
    host, port = password_redis.host, password_redis.port
    layer = make_layer(hosts=[{"address": f"redis://{host}:{port}", "password": PASSWORD, "db": 2}])
    await _round_trip(layer)
    assert await _keys_in_db(host, port, 2, prefix, PASSWORD) > 0


async def test_dict_with_host_and_port(make_layer: LayerFactory, redis_server: RedisServer) -> None:
    await _round_trip(make_layer(hosts=[{"host": redis_server.host, "port": redis_server.port}]))


def test_hosts_as_a_single_string_is_refused(redis_url: str) -> None:
    with pytest.raises(ValueError, match=r"(?i)list"):
        layer_class()(hosts=redis_url)


async def test_several_hosts_spread_keys_and_everything_works(
    make_layer: LayerFactory, redis_server: RedisServer, own_redis: RedisServer, prefix: str
) -> None:
    hosts = [redis_server.url, own_redis.url]
    owner, sender = make_layer(hosts=hosts), make_layer(hosts=hosts)
    normals = [f"shard.{i}" for i in range(16)]
    specifics = [await owner.new_channel() for _ in range(4)]
    for i, channel in enumerate(normals + specifics):
        await sender.send(channel, {"type": "x", "n": i})
    groups = [f"group{i}" for i in range(8)]
    for group in groups:
        await sender.group_add(group, specifics[0])
    first = await _keys_in_db(redis_server.host, redis_server.port, 0, prefix)
    second = await _keys_in_db(own_redis.host, own_redis.port, 0, prefix)
    assert first > 0, "no key on the first host"
    assert second > 0, "no key on the second host"
    for i, channel in enumerate(normals + specifics):
        assert (await receive_within(owner, channel))["n"] == i
    for group in groups:
        await sender.group_send(group, {"type": "g", "group": group})
    received = {(await receive_within(owner, specifics[0]))["group"] for _ in groups}
    assert received == set(groups)


async def test_several_hosts_route_the_same_way_in_every_instance(
    make_layer: LayerFactory, redis_server: RedisServer, own_redis: RedisServer
) -> None:
    hosts = [redis_server.url, own_redis.url]
    for i in range(8):
        sender, receiver = make_layer(hosts=hosts), make_layer(hosts=hosts)
        await sender.send(f"route.{i}", {"type": "x", "n": i})
        await sender.group_add(f"route-group{i}", f"route.member{i}")
        await receiver.group_send(f"route-group{i}", {"type": "x", "n": -i})
        assert (await receive_within(receiver, f"route.{i}"))["n"] == i
        assert (await receive_within(receiver, f"route.member{i}"))["n"] == -i


async def test_prefix_names_every_key_and_isolates_layers(
    make_layer: LayerFactory, prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    first = make_layer(prefix=prefix + "a")
    second = make_layer(prefix=prefix + "b")
    await first.send("same.name", {"type": "x", "owner": "first"})
    await first.send(await first.new_channel(), {"type": "x"})
    assert await receives_nothing(second, "same.name")
    assert await receive_within(first, "same.name") == {"type": "x", "owner": "first"}
    assert await keys_under(redis_client, prefix + "a")
    # The second layer may have made its (empty) stream by receiving; no
    # message may sit under its prefix.
    assert await queued_entries(redis_client, prefix + "b") == 0


async def test_default_prefix_is_asgi(own_redis: RedisServer) -> None:
    layer = layer_class()(hosts=[own_redis.url])
    client = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        await layer.send("default.prefix", {"type": "x"})
        keys = await keys_under(client, "")
        assert keys
        assert all(key.startswith(b"asgi") for key in keys), keys
        assert await receive_within(layer, "default.prefix") == {"type": "x"}
    finally:
        await layer.close_pools()
        await client.aclose()


@pytest.mark.parametrize(
    ("serializer_format", "marker"), [("json", b'"text"'), ("msgpack", b"\xa4text")]
)
async def test_serializer_format_is_used_for_payloads(
    make_layer: LayerFactory,
    prefix: str,
    redis_client: redis.asyncio.Redis,
    serializer_format: str,
    marker: bytes,
) -> None:
    layer = make_layer(serializer_format=serializer_format)
    message = {"type": "x", "text": "héllo", "n": [1, 2, {"k": None}], "f": 0.5, "b": True}
    await layer.send("fmt", message)
    raw = await raw_stream_bytes(redis_client, prefix)
    assert marker in raw
    assert await receive_within(layer, "fmt") == message


class MarkedSerializer(JSONSerializer):
    """JSON behind a marker: a format an application registers with channels_redis."""

    MARK = b"marked:"

    def as_bytes(self, message: Any, *args: Any, **kwargs: Any) -> bytes:
        return self.MARK + bytes(super().as_bytes(message, *args, **kwargs))

    def from_bytes(self, message: bytes, *args: Any, **kwargs: Any) -> Any:
        return super().from_bytes(message.removeprefix(self.MARK), *args, **kwargs)


@pytest.fixture
def marked_format() -> Iterator[str]:
    registry.register_serializer("test-marked", MarkedSerializer)
    yield "test-marked"
    del registry._registry["test-marked"]


async def test_serializer_format_registered_with_channels_redis_is_used(
    make_layer: LayerFactory, prefix: str, redis_client: redis.asyncio.Redis, marked_format: str
) -> None:
    layer = make_layer(serializer_format=marked_format)
    await layer.send("fmt", {"type": "x", "n": 1})
    assert MarkedSerializer.MARK in await raw_stream_bytes(redis_client, prefix)
    assert await receive_within(layer, "fmt") == {"type": "x", "n": 1}


async def test_whole_number_floats_and_fractional_expiry_work(make_layer: LayerFactory) -> None:
    """60.0 from float(os.environ[...]) works as in channels_redis; expiry 0.5 expires."""
    layer = make_layer(capacity=2.0, group_expiry=60.0, expiry=60.0)
    await _round_trip(layer)
    await layer.send("floats.full", {"type": "x"})
    await layer.send("floats.full", {"type": "x"})
    with pytest.raises(ChannelFull):
        await layer.send("floats.full", {"type": "x"})
    short = make_layer(expiry=0.5)
    await short.send("floats.short", {"type": "x"})
    await asyncio.sleep(1.5)
    assert await receives_nothing(short, "floats.short")


def test_unknown_serializer_format_is_refused(redis_url: str) -> None:
    with pytest.raises((ValueError, KeyError)):
        layer_class()(hosts=[redis_url], serializer_format="yaml")


async def test_encrypted_payload_is_not_plaintext_in_redis(
    make_layer: LayerFactory, prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    layer = make_layer(symmetric_encryption_keys=[KEY_A])
    channel = await layer.new_channel()
    await layer.send("secure", {"type": "x", "text": SECRET_TEXT})
    await layer.send(channel, {"type": "x", "text": SECRET_TEXT})
    raw = await raw_stream_bytes(redis_client, prefix)
    assert raw, "the messages were not found in any stream under the prefix"
    assert SECRET_TEXT.encode() not in raw
    assert b"attack" not in raw
    assert (await receive_within(layer, "secure"))["text"] == SECRET_TEXT
    assert (await receive_within(layer, channel))["text"] == SECRET_TEXT


@pytest.mark.parametrize("kind", ["normal", "specific"])
async def test_message_sent_with_old_key_is_read_after_rotation(
    make_layer: LayerFactory, kind: str
) -> None:
    old = make_layer(symmetric_encryption_keys=[KEY_A])
    rotated = make_layer(symmetric_encryption_keys=[KEY_B, KEY_A])
    channel = await rotated.new_channel() if kind == "specific" else "rotating"
    await old.send(channel, {"type": "x", "text": "old key"})
    assert await receive_within(rotated, channel) == {"type": "x", "text": "old key"}
    # And what the rotated layer writes (with B) is readable by a B-only layer.
    newer = make_layer(symmetric_encryption_keys=[KEY_B])
    target = await newer.new_channel() if kind == "specific" else "rotating"
    await rotated.send(target, {"type": "x", "text": "new key"})
    assert await receive_within(newer, target) == {"type": "x", "text": "new key"}


@pytest.mark.parametrize("kind", ["normal", "specific"])
async def test_layer_with_wrong_key_skips_and_logs_and_keeps_working(
    make_layer: LayerFactory, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.DEBUG, logger="streams_layer")
    sender = make_layer(symmetric_encryption_keys=[KEY_A])
    wrong = make_layer(symmetric_encryption_keys=[KEY_WRONG])
    channel = await wrong.new_channel() if kind == "specific" else "wrong.key"
    await sender.send(channel, {"type": "x", "text": SECRET_TEXT})
    assert await receives_nothing(wrong, channel, 1.0)
    assert any(r.name.startswith("streams_layer") for r in caplog.records), "nothing was logged"
    assert not any(SECRET_TEXT in r.getMessage() for r in caplog.records)
    friend = make_layer(symmetric_encryption_keys=[KEY_WRONG])
    await friend.send(channel, {"type": "x", "text": "readable"})
    assert await receive_within(wrong, channel) == {"type": "x", "text": "readable"}


def _listening_socket() -> socket.socket:
    server = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    server.bind(("127.0.0.1", 0))
    server.listen(8)
    server.setblocking(False)
    return server


async def test_constructing_the_layer_does_no_network_io() -> None:
    server = _listening_socket()
    try:
        port = server.getsockname()[1]
        layer = layer_class()(hosts=[f"redis://127.0.0.1:{port}/0"], prefix="noio")
        await asyncio.sleep(0.3)
        with pytest.raises(BlockingIOError):
            server.accept()
        assert layer.extensions == ["groups", "flush"]
    finally:
        server.close()


async def test_unreachable_host_fails_only_at_the_first_operation() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    # Nothing listens on `port` now.
    layer = layer_class()(hosts=[f"redis://127.0.0.1:{port}/0"], prefix="unreachable")
    try:
        with pytest.raises((StreamsLayerError, ConnectionError)):
            await asyncio.wait_for(layer.send("nowhere", {"type": "x"}), 30)
    finally:
        await layer.close_pools()
