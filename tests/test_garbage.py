"""Garbage in Redis: entries the layer did not write are logged and skipped.

Another client writes to the layer's streams: entries with the wrong fields,
payloads that do not decode, payloads encrypted with another key, payloads
that decode to something other than a dict, and a stream replaced by a key
of another type. The reader must log each one, skip it, carry on, and
deliver every valid message in order; for the replaced key, operations fail
with a typed error while it is there and work again once it is gone,
without restarting anything.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

import msgpack
import pytest
import redis.asyncio

from streams_layer.exceptions import StreamsLayerError
from streams_layer.keys import KeySpace, client_of
from tests.layer_helpers import LayerFactory, receive_within

KEY = "garbage-test-key"
OTHER_KEY = "somebody-elses-key"
RECOVER_S = 10.0


def garbage_entries(channel: str) -> list[dict[Any, Any]]:
    """Stream entries that no layer writes (fields as given to XADD)."""
    return [
        {"x": "no c and no m"},
        {"c": channel},  # no payload
        {"m": msgpack.packb({"type": "no channel"})},  # inbox entries need "c"
        {"c": channel, "m": b"\xff\xfe not msgpack, not json, not fernet"},
        {"c": channel, "m": msgpack.packb([1, 2, 3])},  # decodes, but not to a dict
        {"c": channel, "m": b"gAAAAABtampered-token"},  # looks like Fernet, is not
        {"c": b"\xff\xfe", "m": msgpack.packb({"type": "bad channel bytes"})},
        {"c": channel, "m": b""},
    ]


def plain_message(payload: Any) -> bool:
    """Whether ``payload`` is an unencrypted msgpack dict."""
    try:
        return isinstance(msgpack.unpackb(payload), dict)
    except (ValueError, TypeError, msgpack.ExtraData):
        return False


def skip_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("streams_layer") and r.levelno >= logging.WARNING
    ]


async def interleave(
    client: redis.asyncio.Redis,
    key: str,
    garbage: list[dict[Any, Any]],
    send_valid: Any,
) -> int:
    """Valid message 0, garbage, valid 1, garbage, ...; returns the number of valid ones."""
    for n, fields in enumerate(garbage):
        await send_valid(n)
        await client.xadd(key, fields)
    await send_valid(len(garbage))
    return len(garbage) + 1


@pytest.mark.parametrize("encrypted", [False, True])
async def test_inbox_skips_garbage_and_delivers_every_valid_message(
    make_layer: LayerFactory,
    redis_client: redis.asyncio.Redis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
    encrypted: bool,
) -> None:
    caplog.set_level(logging.WARNING, logger="streams_layer")
    keys = [KEY] if encrypted else None
    layer = make_layer(symmetric_encryption_keys=keys)
    channel = await layer.new_channel()
    inbox = KeySpace(prefix).inbox(client_of(channel))
    receiving = asyncio.ensure_future(layer.receive(channel))  # the reader runs throughout
    await asyncio.sleep(0.05)

    async def send_valid(n: int) -> None:
        await layer.send(channel, {"type": "valid", "n": n})

    count = await interleave(redis_client, inbox, garbage_entries(channel), send_valid)
    received = [(await asyncio.wait_for(receiving, RECOVER_S))["n"]]
    received += [(await receive_within(layer, channel))["n"] for _ in range(count - 1)]
    assert received == list(range(count))
    lines = skip_lines(caplog)
    # Every garbage entry that names the channel or lacks fields is reported.
    assert len([line for line in lines if "skipping" in line]) == len(garbage_entries(channel))
    assert all(inbox in line for line in lines)


@pytest.mark.parametrize("encrypted", [False, True])
async def test_channel_skips_garbage_and_delivers_every_valid_message(
    make_layer: LayerFactory,
    redis_client: redis.asyncio.Redis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
    encrypted: bool,
) -> None:
    caplog.set_level(logging.WARNING, logger="streams_layer")
    layer = make_layer(symmetric_encryption_keys=[KEY] if encrypted else None)
    channel = "garbage.normal"
    key = KeySpace(prefix).channel(channel)
    # A normal channel reads only "m": an entry with a plain msgpack dict there is
    # a message (unless the layer encrypts), whatever else it carries.
    garbage = [
        fields
        for fields in garbage_entries(channel)
        if encrypted or not plain_message(fields.get("m"))
    ]
    receiving = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0.05)

    async def send_valid(n: int) -> None:
        await layer.send(channel, {"type": "valid", "n": n})

    count = await interleave(redis_client, key, garbage, send_valid)
    received = [(await asyncio.wait_for(receiving, RECOVER_S))["n"]]
    received += [(await receive_within(layer, channel))["n"] for _ in range(count - 1)]
    assert received == list(range(count))
    skipped = [line for line in skip_lines(caplog) if "skipping" in line]
    assert len(skipped) == len(garbage)
    assert all(channel in line for line in skipped)


@pytest.mark.parametrize("kind", ["specific", "normal"])
async def test_messages_from_a_layer_with_another_key_are_skipped(
    make_layer: LayerFactory, caplog: pytest.LogCaptureFixture, kind: str
) -> None:
    caplog.set_level(logging.WARNING, logger="streams_layer")
    reader = make_layer(symmetric_encryption_keys=[KEY])
    intruder = make_layer(symmetric_encryption_keys=[OTHER_KEY])
    channel = await reader.new_channel() if kind == "specific" else "garbage.keys"
    for n in range(7):
        sender = intruder if n % 2 else reader
        await sender.send(channel, {"type": "x", "n": n, "from": "intruder" if n % 2 else "ok"})
    received = [await receive_within(reader, channel) for _ in range(4)]
    assert [m["n"] for m in received] == [0, 2, 4, 6]
    assert all(m["from"] == "ok" for m in received)
    skipped = [line for line in skip_lines(caplog) if "skipping" in line]
    assert len(skipped) == 3
    assert all("InvalidToken" in line for line in skipped)


async def _until_ok(operation: Any) -> Any:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + RECOVER_S
    while True:
        try:
            return await operation()
        except StreamsLayerError:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


@pytest.mark.parametrize("kind", ["specific", "normal"])
async def test_stream_replaced_by_a_string_fails_typed_then_recovers(
    make_layer: LayerFactory,
    redis_client: redis.asyncio.Redis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="streams_layer")
    layer = make_layer()
    channel = await layer.new_channel() if kind == "specific" else "garbage.replaced"
    keys = KeySpace(prefix)
    key = keys.inbox(client_of(channel)) if kind == "specific" else keys.channel(channel)
    await layer.send(channel, {"type": "x", "n": 0})
    assert (await receive_within(layer, channel))["n"] == 0
    receiving = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0.1)

    await redis_client.delete(key)
    await redis_client.set(key, "not a stream")
    with pytest.raises(StreamsLayerError) as caught:
        await layer.send(channel, {"type": "x", "n": 1})
    assert "WRONGTYPE" in str(caught.value)
    # The blocked reader meets the string and logs it, but keeps going.
    await asyncio.sleep(2.5)
    assert not receiving.done()
    assert [line for line in skip_lines(caplog) if "WRONGTYPE" in line]

    await redis_client.delete(key)
    await _until_ok(lambda: layer.send(channel, {"type": "x", "n": 2}))
    message = await asyncio.wait_for(receiving, RECOVER_S)
    assert message["n"] == 2
    await layer.send(channel, {"type": "x", "n": 3})
    assert (await receive_within(layer, channel))["n"] == 3


async def test_a_normal_channel_replaced_by_a_string_is_retried_with_back_off(
    make_layer: LayerFactory, redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    """The acknowledgement of the last message fails while the key is a string:
    receive() waits between attempts instead of asking Redis again at once."""
    layer = make_layer()
    channel = "garbage.backoff"
    key = KeySpace(prefix).channel(channel)
    await layer.send(channel, {"type": "x", "n": 0})
    assert (await receive_within(layer, channel))["n"] == 0  # its ack rides on the next read
    await redis_client.delete(key)
    await redis_client.set(key, "not a stream")

    def reads(stats: dict[str, Any]) -> int:
        return int(stats.get("cmdstat_xreadgroup", {}).get("calls", 0))

    before = reads(await redis_client.info("commandstats"))
    receiving = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(1.5)
    attempts = reads(await redis_client.info("commandstats")) - before
    assert attempts < 30, f"{attempts} reads in 1.5 s"
    assert not receiving.done()

    await redis_client.delete(key)
    await _until_ok(lambda: layer.send(channel, {"type": "x", "n": 1}))
    assert (await asyncio.wait_for(receiving, RECOVER_S))["n"] == 1


@pytest.mark.parametrize("kind", ["specific", "normal"])
async def test_an_entry_with_a_far_future_id_does_not_stop_delivery(
    make_layer: LayerFactory,
    redis_client: redis.asyncio.Redis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
    kind: str,
) -> None:
    # Every later XADD * gets an ID after the planted one, so the messages
    # keep flowing; their time stamps are wrong from then on (docs/security.md).
    caplog.set_level(logging.WARNING, logger="streams_layer")
    layer = make_layer()
    channel = await layer.new_channel() if kind == "specific" else "garbage.future"
    keys = KeySpace(prefix)
    key = keys.inbox(client_of(channel)) if kind == "specific" else keys.channel(channel)
    await layer.send(channel, {"type": "x", "n": 0})
    assert (await receive_within(layer, channel))["n"] == 0
    await redis_client.xadd(key, {"c": channel, "m": b"junk"}, id="99999999999999-0")
    for n in range(1, 4):
        await layer.send(channel, {"type": "x", "n": n})
        assert (await receive_within(layer, channel))["n"] == n
    assert len([line for line in skip_lines(caplog) if "skipping" in line]) == 1
