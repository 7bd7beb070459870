"""The opt-in same-process shortcut: an instance's sends to its own channels skip Redis."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio

from streams_layer import ChannelFull
from tests.layer_helpers import LayerFactory, keys_under, receive_within, receives_nothing


async def test_own_channel_messages_skip_the_inbox_stream(
    make_layer: LayerFactory, redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    layer = make_layer(same_process_shortcut=True)
    channel = await layer.new_channel()
    message = {"type": "x", "nested": {"n": 1}}
    await layer.send(channel, message)
    received = await receive_within(layer, channel)
    assert received == message
    assert received is not message  # the receiver never shares the sender's objects
    streams = [k for k in await keys_under(redis_client, prefix) if b":inbox:{" in k]
    assert all(k.endswith(b":n") for k in streams), streams  # only the capacity counts


async def test_shortcut_keeps_capacity_order_and_flush(make_layer: LayerFactory) -> None:
    layer = make_layer(same_process_shortcut=True, capacity=2)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "x", "n": 0})
    await layer.send(channel, {"type": "x", "n": 1})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "x", "n": 2})
    assert (await receive_within(layer, channel))["n"] == 0
    await layer.send(channel, {"type": "x", "n": 3})
    await layer.flush()
    assert await receives_nothing(layer, channel)


async def test_shortcut_messages_hold_capacity_against_group_sends(
    make_layer: LayerFactory,
) -> None:
    layer = make_layer(same_process_shortcut=True, capacity=2)
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    await layer.send(channel, {"type": "x", "n": 0})
    await layer.send(channel, {"type": "x", "n": 1})
    await layer.group_send("room", {"type": "x", "n": 2})  # the member is full: skipped
    assert [(await receive_within(layer, channel))["n"] for _ in range(2)] == [0, 1]
    assert await receives_nothing(layer, channel)


async def test_shortcut_messages_expire(make_layer: LayerFactory) -> None:
    layer = make_layer(same_process_shortcut=True, expiry=1)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "x", "n": 0})
    await asyncio.sleep(1.2)
    await layer.send(channel, {"type": "x", "n": 1})
    assert (await receive_within(layer, channel))["n"] == 1
