"""expiry and group_expiry: old messages are never delivered, abandoned keys vanish."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
import redis.asyncio

from tests.layer_helpers import LayerFactory, keys_under, receive_within, receives_nothing

EXPIRY_S = 1
# How long after expiry an abandoned key may live: the layer gives keys a TTL
# of expiry plus a margin of its own (10 s when this was written), Redis
# counts TTLs in whole seconds, and its active expiry cycle takes a moment.
VANISH_MARGIN_S = 13.0


async def _wait_until_gone(
    client: redis.asyncio.Redis, prefix: str, keep: bytes = b"\xff", deadline_s: float = 0.0
) -> list[bytes]:
    """Poll until no key under ``prefix`` (except those containing ``keep``) remains."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + (deadline_s or EXPIRY_S + VANISH_MARGIN_S)
    while True:
        left = [key for key in await keys_under(client, prefix) if keep not in key]
        # EXISTS makes Redis check each key's TTL now rather than in its cycle.
        if left:
            left = [key for key in left if await client.exists(key)]
        if not left or loop.time() >= deadline:
            return left
        await asyncio.sleep(0.2)


@pytest.mark.parametrize("kind", ["normal", "specific"])
async def test_expired_message_is_never_delivered(make_layer: LayerFactory, kind: str) -> None:
    owner, sender = make_layer(expiry=EXPIRY_S), make_layer(expiry=EXPIRY_S)
    channel = await owner.new_channel() if kind == "specific" else "expiring"
    await sender.send(channel, {"type": "x", "n": "old"})
    await asyncio.sleep(EXPIRY_S + 0.5)
    assert await receives_nothing(owner, channel)
    await sender.send(channel, {"type": "x", "n": "fresh"})
    assert await receive_within(owner, channel) == {"type": "x", "n": "fresh"}


async def test_expired_message_in_local_buffer_is_never_delivered(
    make_layer: LayerFactory,
) -> None:
    owner, sender = make_layer(expiry=EXPIRY_S), make_layer(expiry=EXPIRY_S)
    waiting, busy = await owner.new_channel(), await owner.new_channel()
    await sender.send(waiting, {"type": "x", "n": "old"})
    # Receiving on a sibling channel reads the inbox into local buffers, so
    # the old message waits in the layer's process rather than in Redis.
    assert await receives_nothing(owner, busy, 0.3)
    await asyncio.sleep(EXPIRY_S + 0.5)
    assert await receives_nothing(owner, waiting)
    await sender.send(waiting, {"type": "x", "n": "fresh"})
    assert await receive_within(owner, waiting) == {"type": "x", "n": "fresh"}


async def test_expired_group_message_is_never_delivered(make_layer: LayerFactory) -> None:
    owner = make_layer(expiry=EXPIRY_S)
    channel = await owner.new_channel()
    await owner.group_add("room", channel)
    await owner.group_add("room", "group.normal")
    await owner.group_send("room", {"type": "x", "n": "old"})
    await asyncio.sleep(EXPIRY_S + 0.5)
    assert await receives_nothing(owner, channel)
    assert await receives_nothing(owner, "group.normal")


async def test_messages_younger_than_expiry_are_delivered(make_layer: LayerFactory) -> None:
    layer = make_layer(expiry=3)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "x"})
    await layer.send("normal", {"type": "x"})
    await asyncio.sleep(1.2)
    assert await receive_within(layer, channel) == {"type": "x"}
    assert await receive_within(layer, "normal") == {"type": "x"}


@pytest.mark.slow
async def test_keys_of_abandoned_channels_and_groups_vanish_after_expiry(
    make_layer: LayerFactory, prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    # `owner` stays open and idle; `sender` is closed. Either way, nothing it
    # wrote may outlive expiry (plus the layer's key TTL margin).
    owner = make_layer(expiry=EXPIRY_S, group_expiry=1)
    sender = make_layer(expiry=EXPIRY_S, group_expiry=1)
    received = await owner.new_channel()
    abandoned = await owner.new_channel()
    await sender.send(received, {"type": "x"})
    await sender.send(abandoned, {"type": "x"})
    await sender.send("normal.abandoned", {"type": "x"})
    await sender.send("normal.read", {"type": "x"})
    await sender.group_add("room", abandoned)
    await sender.group_add("room", "normal.member")
    await sender.group_send("room", {"type": "x"})
    assert await receive_within(owner, received) == {"type": "x"}
    assert await receive_within(owner, "normal.read") == {"type": "x"}
    assert await keys_under(redis_client, prefix)
    await sender.close_pools()
    assert await _wait_until_gone(redis_client, prefix) == []


async def test_group_membership_lapses_after_group_expiry(make_layer: LayerFactory) -> None:
    # Margins of 1 s either side, so whole-second clocks cannot flip the result.
    layer = make_layer(group_expiry=2)
    lapsed, renewed = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room", lapsed)
    await layer.group_add("room", renewed)
    await asyncio.sleep(1.5)
    await layer.group_add("room", renewed)
    await asyncio.sleep(1.5)
    await layer.group_send("room", {"type": "x"})
    assert await receive_within(layer, renewed) == {"type": "x"}
    assert await receives_nothing(layer, lapsed)


async def test_every_key_has_a_ttl_or_is_a_bounded_history(
    make_layer: LayerFactory, prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    history_size = 5
    owner = make_layer(history_size=history_size)
    sender = make_layer(history_size=history_size)
    channel = await owner.new_channel()
    await owner.group_add("room", channel)
    await owner.group_add("room", "room.normal")
    await sender.send(channel, {"type": "x"})
    await sender.send("normal", {"type": "x"})
    await sender.send("never.read", {"type": "x"})
    await sender.group_send("room", {"type": "x"})
    for n in range(history_size + 3):
        await sender.group_send_recorded("room", {"type": "x", "n": n})
    assert await receive_within(owner, channel) == {"type": "x"}
    assert await receive_within(owner, "normal") == {"type": "x"}
    assert await receive_within(owner, "room.normal") == {"type": "x"}
    keys = await keys_under(redis_client, prefix)
    assert keys
    without_ttl: list[bytes] = []
    for key in keys:
        if await redis_client.ttl(key) >= 0:
            continue
        if b":history:" in key and await redis_client.xlen(key) <= history_size:
            continue
        without_ttl.append(key)
    assert without_ttl == []


async def test_streams_are_trimmed_to_unexpired_entries(
    make_layer: LayerFactory, prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    layer = make_layer(expiry=EXPIRY_S, capacity=1000)
    channel = await layer.new_channel()
    # 300 entries: more than one radix tree node (100 entries by default), so
    # that even approximate trimming ("MINID ~") must drop some.
    for n in range(300):
        await layer.send("trimmed", {"type": "x", "n": n})
        await layer.send(channel, {"type": "x", "n": n})
    await asyncio.sleep(EXPIRY_S + 0.2)
    # Later sends trim what expired (all at once or a batch per send), so
    # streams do not grow with traffic.
    fresh = range(1000, 1020)
    for n in fresh:
        await layer.send("trimmed", {"type": "x", "n": n})
        await layer.send(channel, {"type": "x", "n": n})
    for key in await keys_under(redis_client, prefix):
        if await redis_client.type(key) == b"stream":
            assert await redis_client.xlen(key) <= 101 + len(fresh), key
    assert [(await receive_within(layer, "trimmed"))["n"] for _ in fresh] == list(fresh)
    assert [(await receive_within(layer, channel))["n"] for _ in fresh] == list(fresh)


async def test_ttl_is_not_longer_than_needed(
    make_layer: LayerFactory, prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    expiry_s = 30
    layer: Any = make_layer(expiry=expiry_s)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "x"})
    await layer.send("normal", {"type": "x"})
    for key in await keys_under(redis_client, prefix):
        ttl = await redis_client.ttl(key)
        assert 0 < ttl <= 2 * expiry_s + 5, (key, ttl)


@pytest.mark.parametrize("kind", ["normal", "specific"])
async def test_busy_keys_keep_a_ttl_longer_than_expiry_without_an_expire_per_send(
    make_layer: LayerFactory, prefix: str, redis_client: redis.asyncio.Redis, kind: str
) -> None:
    """Sends set a key's TTL again only once it has run down by KEY_TTL_SLACK_MS,
    yet the key always outlives the newest message it holds."""
    layer: Any = make_layer(expiry=EXPIRY_S)
    channel = await layer.new_channel() if kind == "specific" else "busy"
    full_ms = layer.config.key_ttl_s * 1000
    lowest = full_ms
    refreshed = False
    previous: dict[bytes, int] = {}
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2.5
    n = 0
    while loop.time() < deadline:
        await layer.send(channel, {"type": "x", "n": n})
        await receive_within(layer, channel)
        n += 1
        for key in await keys_under(redis_client, prefix):
            if await redis_client.type(key) not in (b"stream", b"hash"):
                continue
            pttl = await redis_client.pttl(key)
            assert pttl > 0, (key, pttl)
            lowest = min(lowest, pttl)
            refreshed = refreshed or pttl > previous.get(key, full_ms)
            previous[key] = pttl
        await asyncio.sleep(0.02)
    assert lowest < full_ms - 100  # not an EXPIRE per send
    assert lowest > EXPIRY_S * 1000  # outlives the newest message
    assert refreshed  # and set again while the key is in use
