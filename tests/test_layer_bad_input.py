"""Bad input: a typed error naming the problem, nothing enqueued, the layer keeps working."""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgpack
import pytest
import redis.asyncio
from redis.typing import EncodableT, FieldT

from streams_layer.exceptions import (
    InvalidChannelNameError,
    InvalidMessageError,
    MessageTooLarge,
    StreamsLayerError,
)
from tests.layer_helpers import (
    LayerFactory,
    keys_under,
    queued_entries,
    receive_within,
    receives_nothing,
    stream_keys,
)

MAX_MESSAGE_BYTES = 1024
TOO_LONG_NAME = "a" * 100  # BaseChannelLayer.MAX_NAME_LENGTH: names must be shorter


@pytest.fixture
def layer(make_layer: LayerFactory) -> Any:
    return make_layer(max_message_bytes=MAX_MESSAGE_BYTES)


async def _target(layer: Any, kind: str) -> str:
    if kind == "specific":
        channel: str = await layer.new_channel()
        return channel
    return "bad.input"


async def _assert_nothing_enqueued_and_still_working(
    layer: Any, channel: str, client: redis.asyncio.Redis, prefix: str
) -> None:
    assert await queued_entries(client, prefix) == 0
    assert await receives_nothing(layer, channel, 0.2)
    await layer.send(channel, {"type": "ok"})
    assert await receive_within(layer, channel) == {"type": "ok"}


# -- messages -------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["normal", "specific"])
@pytest.mark.parametrize(
    "message",
    [[("type", "x")], "a string", b"bytes", None, 42, ("type", "x")],
    ids=["list", "str", "bytes", "None", "int", "tuple"],
)
async def test_message_that_is_not_a_dict_is_refused(
    layer: Any, prefix: str, redis_client: redis.asyncio.Redis, kind: str, message: Any
) -> None:
    channel = await _target(layer, kind)
    with pytest.raises(InvalidMessageError, match="dict") as excinfo:
        await layer.send(channel, message)
    assert isinstance(excinfo.value, TypeError)
    await _assert_nothing_enqueued_and_still_working(layer, channel, redis_client, prefix)


@pytest.mark.parametrize("kind", ["normal", "specific"])
async def test_reserved_key_is_refused(
    layer: Any, prefix: str, redis_client: redis.asyncio.Redis, kind: str
) -> None:
    channel = await _target(layer, kind)
    with pytest.raises(InvalidMessageError, match="__asgi_channel__"):
        await layer.send(channel, {"type": "x", "__asgi_channel__": channel})
    await _assert_nothing_enqueued_and_still_working(layer, channel, redis_client, prefix)


@pytest.mark.parametrize("kind", ["normal", "specific"])
@pytest.mark.parametrize(
    "value", [object(), {1, 2}, lambda: None, Exception("x")], ids=["object", "set", "fn", "exc"]
)
async def test_unserializable_value_is_refused(
    layer: Any, prefix: str, redis_client: redis.asyncio.Redis, kind: str, value: Any
) -> None:
    channel = await _target(layer, kind)
    with pytest.raises(InvalidMessageError) as excinfo:
        await layer.send(channel, {"type": "x", "value": value})
    assert isinstance(excinfo.value, TypeError)
    assert str(excinfo.value)
    await _assert_nothing_enqueued_and_still_working(layer, channel, redis_client, prefix)


async def test_bytes_are_unserializable_with_json(
    make_layer: LayerFactory, prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    layer = make_layer(serializer_format="json")
    with pytest.raises(InvalidMessageError):
        await layer.send("json.bytes", {"type": "x", "data": b"\x00"})
    await _assert_nothing_enqueued_and_still_working(layer, "json.bytes", redis_client, prefix)


@pytest.mark.parametrize("kind", ["normal", "specific"])
async def test_message_over_size_limit_raises_message_too_large(
    layer: Any, prefix: str, redis_client: redis.asyncio.Redis, kind: str
) -> None:
    channel = await _target(layer, kind)
    with pytest.raises(MessageTooLarge) as excinfo:
        await layer.send(channel, {"type": "x", "blob": "x" * (2 * MAX_MESSAGE_BYTES)})
    assert isinstance(excinfo.value, ValueError)
    assert isinstance(excinfo.value, StreamsLayerError)
    assert str(MAX_MESSAGE_BYTES) in str(excinfo.value)
    await _assert_nothing_enqueued_and_still_working(layer, channel, redis_client, prefix)


async def test_message_under_size_limit_is_sent(layer: Any) -> None:
    message = {"type": "x", "blob": "x" * (MAX_MESSAGE_BYTES // 2)}
    await layer.send("size.ok", message)
    assert await receive_within(layer, "size.ok") == message


async def test_group_send_refuses_bad_messages_and_enqueues_nothing(
    layer: Any, prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    member = await layer.new_channel()
    await layer.group_add("room", member)
    with pytest.raises(TypeError):
        await layer.group_send("room", ["not", "a", "dict"])
    with pytest.raises(TypeError):
        await layer.group_send("room", {"type": "x", "value": object()})
    with pytest.raises(MessageTooLarge):
        await layer.group_send("room", {"type": "x", "blob": "x" * (2 * MAX_MESSAGE_BYTES)})
    await _assert_nothing_enqueued_and_still_working(layer, member, redis_client, prefix)
    await layer.group_send("room", {"type": "group"})
    assert await receive_within(layer, member) == {"type": "group"}


# -- names -----------------------------------------------------------------------------

BAD_NAMES = [
    pytest.param("has space", id="space"),
    pytest.param("semi;colon", id="semicolon"),
    pytest.param("colon:name", id="colon"),
    pytest.param("héllo", id="non-ascii"),
    pytest.param("", id="empty"),
    pytest.param(TOO_LONG_NAME, id="too-long"),
    pytest.param(b"bytes.name", id="bytes"),
    pytest.param(123, id="int"),
    pytest.param(None, id="None"),
]


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_send_to_invalid_channel_name_raises_type_error(
    layer: Any, prefix: str, redis_client: redis.asyncio.Redis, name: Any
) -> None:
    with pytest.raises(InvalidChannelNameError) as excinfo:
        await layer.send(name, {"type": "x"})
    assert isinstance(excinfo.value, TypeError)
    await _assert_nothing_enqueued_and_still_working(layer, "after.bad.name", redis_client, prefix)


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_receive_on_invalid_channel_name_raises_type_error(layer: Any, name: Any) -> None:
    with pytest.raises(TypeError):
        await receive_within(layer, name)


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_group_calls_with_invalid_group_name_raise_type_error(
    layer: Any, prefix: str, redis_client: redis.asyncio.Redis, name: Any
) -> None:
    with pytest.raises(TypeError):
        await layer.group_add(name, "valid.channel")
    with pytest.raises(TypeError):
        await layer.group_discard(name, "valid.channel")
    with pytest.raises(TypeError):
        await layer.group_send(name, {"type": "x"})
    assert await keys_under(redis_client, prefix) == []


@pytest.mark.parametrize("name", BAD_NAMES)
async def test_group_add_of_invalid_channel_name_raises_type_error(layer: Any, name: Any) -> None:
    with pytest.raises(TypeError):
        await layer.group_add("room", name)
    with pytest.raises(TypeError):
        await layer.group_discard("room", name)
    member = await layer.new_channel()
    await layer.group_add("room", member)
    await layer.group_send("room", {"type": "x"})
    assert await receive_within(layer, member) == {"type": "x"}
    assert await receives_nothing(layer, member, 0.2)


async def test_group_name_may_not_contain_an_exclamation_mark(layer: Any) -> None:
    # Valid for a channel, not for a group (BaseChannelLayer.group_name_regex).
    with pytest.raises(TypeError):
        await layer.group_add("room!x", "valid.channel")


async def test_valid_names_of_99_characters_are_accepted(layer: Any) -> None:
    name = "b" * 99
    await layer.send(name, {"type": "x"})
    assert await receive_within(layer, name) == {"type": "x"}
    await layer.group_add(name, name)
    await layer.group_send(name, {"type": "g"})
    assert await receive_within(layer, name) == {"type": "g"}


# -- garbage written into the layer's streams by someone else --------------------------


async def _only_stream_key(client: redis.asyncio.Redis, prefix: str) -> bytes:
    keys = [key for key in await stream_keys(client, prefix) if b":history:" not in key]
    assert len(keys) == 1, keys
    return keys[0]


GARBAGE_ENTRIES: list[dict[FieldT, EncodableT]] = [
    {"x": "y"},
    {"m": b"\x00\xff\xfe not a payload"},
    {"c": "{channel}", "m": b"\xc1\xc1\xc1"},
    {"c": "{channel}", "m": msgpack.packb([1, 2, 3])},
    {"c": "{channel}", "m": msgpack.packb("a string")},
    {"c": "{channel}"},
    {"c": "{channel}", "m": b""},
]
# A well-formed message for a channel this layer instance does not own: garbage
# in an inbox (a normal channel's stream would rightly deliver it).
FOREIGN_INBOX_ENTRY: dict[FieldT, EncodableT] = {
    "c": "not-a-channel-of-ours!zzz",
    "m": msgpack.packb({"type": "x"}),
}


def _garbage(channel: str) -> list[dict[FieldT, EncodableT]]:
    return [
        {k: v.replace("{channel}", channel) if isinstance(v, str) else v for k, v in entry.items()}
        for entry in GARBAGE_ENTRIES
    ]


@pytest.mark.parametrize("kind", ["normal", "specific"])
async def test_malformed_stream_entries_are_logged_and_skipped(
    make_layer: LayerFactory,
    prefix: str,
    redis_client: redis.asyncio.Redis,
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    caplog.set_level(logging.DEBUG, logger="streams_layer")
    layer = make_layer()
    channel = await _target(layer, kind)
    await layer.send(channel, {"type": "x", "n": 1})
    assert (await receive_within(layer, channel))["n"] == 1
    key = await _only_stream_key(redis_client, prefix)
    garbage = _garbage(channel)
    if kind == "specific":
        garbage.append(FOREIGN_INBOX_ENTRY)
    for entry in garbage:
        await redis_client.xadd(key, entry)
    await layer.send(channel, {"type": "x", "n": 2})
    assert (await receive_within(layer, channel))["n"] == 2
    assert any(r.name.startswith("streams_layer") for r in caplog.records), "nothing logged"
    # The reader did not die: the next messages arrive too.
    for n in (3, 4):
        await layer.send(channel, {"type": "x", "n": n})
    assert [(await receive_within(layer, channel))["n"] for _ in range(2)] == [3, 4]


async def test_malformed_entry_while_a_receive_is_waiting_is_skipped(
    make_layer: LayerFactory, prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    layer = make_layer()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "x", "n": 1})
    assert (await receive_within(layer, channel))["n"] == 1
    key = await _only_stream_key(redis_client, prefix)
    waiting = receive_within(layer, channel, 3)
    task = asyncio.ensure_future(waiting)
    await asyncio.sleep(0.1)
    await redis_client.xadd(key, {"c": channel, "m": b"garbage"})
    await asyncio.sleep(0.1)
    assert not task.done(), "the garbage entry ended the waiting receive()"
    await layer.send(channel, {"type": "x", "n": 2})
    assert (await task)["n"] == 2
