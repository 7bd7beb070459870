"""capacity and channel_capacity: ChannelFull on send, per channel, never on group_send."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from typing import Any

import channels.exceptions
import pytest
import redis.asyncio

import streams_layer
from streams_layer.exceptions import ChannelFull, StreamsLayerError
from streams_layer.keys import KeySpace
from tests.layer_helpers import LayerFactory, numbered, receive_within, receives_nothing

CAPACITY_RETURN_S = 1.0


async def _fill(layer: Any, channel: str, count: int) -> None:
    for message in numbered(count):
        await layer.send(channel, message)


async def _channel_of(layer: Any, kind: str) -> str:
    if kind == "specific":
        channel: str = await layer.new_channel()
        return channel
    return "capacity.normal"


@pytest.mark.parametrize("kind", ["normal", "specific"])
async def test_send_over_capacity_raises_channel_full(make_layer: LayerFactory, kind: str) -> None:
    layer = make_layer(capacity=3)
    channel = await _channel_of(layer, kind)
    await _fill(layer, channel, 3)
    with pytest.raises(channels.exceptions.ChannelFull):
        await layer.send(channel, {"type": "x", "n": 99})


async def test_channel_full_is_the_layers_own_and_channels_exception(
    make_layer: LayerFactory,
) -> None:
    layer = make_layer(capacity=1)
    await layer.send("full", {"type": "x"})
    with pytest.raises(ChannelFull) as excinfo:
        await layer.send("full", {"type": "x"})
    assert streams_layer.ChannelFull is ChannelFull
    assert isinstance(excinfo.value, channels.exceptions.ChannelFull)
    assert isinstance(excinfo.value, StreamsLayerError)


@pytest.mark.parametrize("kind", ["normal", "specific"])
async def test_rejected_message_is_not_enqueued(make_layer: LayerFactory, kind: str) -> None:
    layer = make_layer(capacity=2)
    channel = await _channel_of(layer, kind)
    await _fill(layer, channel, 2)
    with pytest.raises(channels.exceptions.ChannelFull):
        await layer.send(channel, {"type": "x", "n": 99})
    received = [(await receive_within(layer, channel))["n"] for _ in range(2)]
    assert received == [0, 1]
    assert await receives_nothing(layer, channel)


@pytest.mark.parametrize("kind", ["normal", "specific"])
async def test_capacity_frees_up_after_receive(make_layer: LayerFactory, kind: str) -> None:
    layer = make_layer(capacity=2)
    channel = await _channel_of(layer, kind)
    await _fill(layer, channel, 2)
    with pytest.raises(channels.exceptions.ChannelFull):
        await layer.send(channel, {"type": "x", "n": 2})
    assert (await receive_within(layer, channel))["n"] == 0
    await layer.send(channel, {"type": "x", "n": 3})
    with pytest.raises(channels.exceptions.ChannelFull):
        await layer.send(channel, {"type": "x", "n": 4})
    assert [(await receive_within(layer, channel))["n"] for _ in range(2)] == [1, 3]


async def test_normal_channel_room_of_messages_that_expired_unread_comes_back(
    make_layer: LayerFactory,
) -> None:
    """Redis's lag of a team still counts entries trimmed before the team read
    them, and XLEN counts delivered entries kept while pending: neither is queued."""
    layer = make_layer(capacity=3, expiry=1)
    channel = "expired.normal"
    await layer.send(channel, {"type": "x", "n": 0})
    assert (await receive_within(layer, channel))["n"] == 0  # the default team reads
    await _fill(layer, channel, 3)
    await asyncio.sleep(1.3)  # the three expire unread
    await layer.send(channel, {"type": "x", "n": 10})  # trims them
    assert (await receive_within(layer, channel))["n"] == 10  # pending until the next read
    for n in (11, 12, 13):
        await layer.send(channel, {"type": "x", "n": n})
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "x", "n": 14})
    assert [(await receive_within(layer, channel))["n"] for _ in range(3)] == [11, 12, 13]


async def test_normal_channel_counts_neither_expired_nor_pending_entries_of_a_team(
    make_layer: LayerFactory, redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    """A team that read everything has nothing queued, however many entries it
    holds pending and however many expired before it could read them."""
    layer = make_layer(capacity=3)
    channel, key = "gone.normal", KeySpace(prefix).channel("gone.normal")
    await redis_client.xgroup_create(key, "t", id="0", mkstream=True)
    for seq in range(4):  # entries of 1970, long expired
        await redis_client.xadd(key, {"m": b"old"}, id=f"1-{seq + 1}")
    await redis_client.xreadgroup("t", "gone", {key: ">"}, count=1)  # three trimmed unread
    for n in range(9):
        await layer.send(channel, {"type": "x", "n": n})
        await redis_client.xreadgroup("t", "gone", {key: ">"})  # never acknowledged
    await _fill(layer, channel, 3)
    with pytest.raises(ChannelFull):
        await layer.send(channel, {"type": "x", "n": 99})


async def test_capacity_is_counted_per_process_specific_channel(make_layer: LayerFactory) -> None:
    # channels_redis counts one process's channels together; this layer counts
    # each channel on its own.
    owner, sender = make_layer(capacity=3), make_layer(capacity=3)
    busy, quiet = await owner.new_channel(), await owner.new_channel()
    await _fill(sender, busy, 3)
    with pytest.raises(channels.exceptions.ChannelFull):
        await sender.send(busy, {"type": "x"})
    await _fill(sender, quiet, 3)
    with pytest.raises(channels.exceptions.ChannelFull):
        await sender.send(quiet, {"type": "x"})
    assert [(await receive_within(owner, quiet))["n"] for _ in range(3)] == [0, 1, 2]
    assert [(await receive_within(owner, busy))["n"] for _ in range(3)] == [0, 1, 2]


async def test_capacity_is_counted_per_normal_channel(make_layer: LayerFactory) -> None:
    layer = make_layer(capacity=2)
    await _fill(layer, "first", 2)
    await _fill(layer, "second", 2)
    with pytest.raises(channels.exceptions.ChannelFull):
        await layer.send("first", {"type": "x"})
    with pytest.raises(channels.exceptions.ChannelFull):
        await layer.send("second", {"type": "x"})


async def test_messages_buffered_locally_still_count_against_capacity(
    make_layer: LayerFactory,
) -> None:
    owner, sender = make_layer(capacity=3), make_layer(capacity=3)
    buffered, other = await owner.new_channel(), await owner.new_channel()
    await _fill(sender, buffered, 3)
    # Receiving on a sibling channel makes the owner read its inbox, which
    # moves the three messages into its local buffer for `buffered`.
    assert await receives_nothing(owner, other)
    with pytest.raises(channels.exceptions.ChannelFull):
        await sender.send(buffered, {"type": "x", "n": 99})
    assert [(await receive_within(owner, buffered))["n"] for _ in range(3)] == [0, 1, 2]
    await _send_when_room(sender, buffered, {"type": "x", "n": 4})
    assert (await receive_within(owner, buffered))["n"] == 4


async def _send_when_room(layer: Any, channel: str, message: dict[str, Any]) -> None:
    """Send, retrying ChannelFull for up to ``CAPACITY_RETURN_S``.

    A receiving layer may hand capacity back to Redis in a batch shortly after
    receive() returns; a sender on another connection can see the old count
    for that long, not longer.
    """
    for _ in range(int(CAPACITY_RETURN_S / 0.05)):
        try:
            await layer.send(channel, message)
        except channels.exceptions.ChannelFull:
            await asyncio.sleep(0.05)
        else:
            return
    await layer.send(channel, message)


async def test_capacity_frees_up_for_another_sender_after_receive(
    make_layer: LayerFactory,
) -> None:
    owner, sender = make_layer(capacity=2), make_layer(capacity=2)
    channel = await owner.new_channel()
    await _fill(sender, channel, 2)
    with pytest.raises(channels.exceptions.ChannelFull):
        await sender.send(channel, {"type": "x", "n": 2})
    assert [(await receive_within(owner, channel))["n"] for _ in range(2)] == [0, 1]
    await _send_when_room(sender, channel, {"type": "x", "n": 3})
    await _send_when_room(sender, channel, {"type": "x", "n": 4})
    assert [(await receive_within(owner, channel))["n"] for _ in range(2)] == [3, 4]


async def _queued_in_redis(layer: Any, channel: str) -> int:
    client = layer._state().shards.client(layer.client_id)
    raw = await client.hget(layer.keys.inbox_counts(layer.client_id), channel)
    return int(raw or 0)


async def test_capacity_comes_back_at_once_after_a_quarter_of_it_was_received(
    make_layer: LayerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Below a quarter the give-back waits for GIVE_BACK_DELAY_S; from a quarter on, it does not."""
    monkeypatch.setattr(streams_layer.layer, "GIVE_BACK_DELAY_S", 30.0)
    owner, sender = make_layer(capacity=8), make_layer(capacity=8)
    channel = await owner.new_channel()
    await _fill(sender, channel, 8)
    await receive_within(owner, channel)
    await asyncio.sleep(0.3)
    assert await _queued_in_redis(owner, channel) == 8  # one of 8 taken: held back
    await receive_within(owner, channel)  # two of 8: a quarter
    for _ in range(100):
        if await _queued_in_redis(owner, channel) == 6:
            break
        await asyncio.sleep(0.02)
    assert await _queued_in_redis(owner, channel) == 6
    await sender.send(channel, {"type": "x", "n": 8})


async def test_channel_capacity_glob_pattern_overrides_capacity(make_layer: LayerFactory) -> None:
    layer = make_layer(capacity=5, channel_capacity={"http.*": 2})
    await _fill(layer, "http.request", 2)
    with pytest.raises(channels.exceptions.ChannelFull):
        await layer.send("http.request", {"type": "x"})
    await _fill(layer, "websocket.receive", 5)
    with pytest.raises(channels.exceptions.ChannelFull):
        await layer.send("websocket.receive", {"type": "x"})


async def test_channel_capacity_glob_matches_process_specific_channels(
    make_layer: LayerFactory,
) -> None:
    layer = make_layer(capacity=5, channel_capacity={"narrow.*": 1})
    channel = await layer.new_channel(prefix="narrow")
    await layer.send(channel, {"type": "x"})
    with pytest.raises(channels.exceptions.ChannelFull):
        await layer.send(channel, {"type": "x"})


async def test_channel_capacity_compiled_regex_overrides_capacity(
    make_layer: LayerFactory,
) -> None:
    layer = make_layer(capacity=4, channel_capacity={re.compile(r"^prio\d+$"): 1})
    await layer.send("prio7", {"type": "x"})
    with pytest.raises(channels.exceptions.ChannelFull):
        await layer.send("prio7", {"type": "x"})
    # "prio7x" does not match the regex: the default capacity applies.
    await _fill(layer, "prio7x", 4)
    with pytest.raises(channels.exceptions.ChannelFull):
        await layer.send("prio7x", {"type": "x"})


async def test_channel_capacity_first_matching_pattern_wins(make_layer: LayerFactory) -> None:
    layer = make_layer(capacity=10, channel_capacity={"a.*": 1, "a.b*": 3})
    await layer.send("a.bc", {"type": "x"})
    with pytest.raises(channels.exceptions.ChannelFull):
        await layer.send("a.bc", {"type": "x"})


async def test_group_send_skips_full_member_and_reaches_the_others(
    make_layer: LayerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    owner, other = make_layer(capacity=2), make_layer(capacity=2)
    full, free, remote = (
        await owner.new_channel(),
        await owner.new_channel(),
        await other.new_channel(),
    )
    for member in (full, free, remote, "group.normal"):
        await owner.group_add("room", member)
    await _fill(owner, full, 2)
    await owner.group_send("room", {"type": "group", "n": 100})
    assert (await receive_within(owner, free))["n"] == 100
    assert (await receive_within(other, remote))["n"] == 100
    assert (await receive_within(owner, "group.normal"))["n"] == 100
    assert [(await receive_within(owner, full))["n"] for _ in range(2)] == [0, 1]
    assert await receives_nothing(owner, full)
    warnings = [
        r
        for r in caplog.records
        if r.name.startswith("streams_layer") and r.levelno >= logging.WARNING
    ]
    assert warnings == [], "a full member is logged below WARNING"


async def test_group_send_skips_full_normal_channel_member(make_layer: LayerFactory) -> None:
    layer = make_layer(capacity=1)
    member = await layer.new_channel()
    await layer.group_add("room", "full.normal")
    await layer.group_add("room", member)
    await layer.send("full.normal", {"type": "x", "n": 0})
    await layer.group_send("room", {"type": "x", "n": 1})
    assert (await receive_within(layer, member))["n"] == 1
    assert (await receive_within(layer, "full.normal"))["n"] == 0
    assert await receives_nothing(layer, "full.normal")


async def test_group_messages_count_against_member_capacity(make_layer: LayerFactory) -> None:
    layer = make_layer(capacity=2)
    member = await layer.new_channel()
    await layer.group_add("room", member)
    for message in numbered(3):
        await layer.group_send("room", message)
    with pytest.raises(channels.exceptions.ChannelFull):
        await layer.send(member, {"type": "x", "n": 99})
    assert [(await receive_within(layer, member))["n"] for _ in range(2)] == [0, 1]
    assert await receives_nothing(layer, member)


async def _counts_hash(layer: Any) -> dict[bytes, bytes]:
    client = layer._state().shards.client(layer.client_id)
    return dict(await client.hgetall(layer.keys.inbox_counts(layer.client_id)))


async def test_group_messages_leave_no_per_member_count_once_received(
    make_layer: LayerFactory,
) -> None:
    """Group entries are counted per inbox (added, read), members only hold a count
    between the reader taking a message in and receive() returning it."""
    # A long block: no empty read, so no idle reset of the counts in this test.
    owner, sender = make_layer(block_ms=8000), make_layer()
    members = [await owner.new_channel() for _ in range(20)]
    for member in members:
        await sender.group_add("room", member)
    for n in range(3):
        await sender.group_send("room", {"type": "x", "n": n})
        for member in members:
            assert (await receive_within(owner, member))["n"] == n
    settled = {b"~g": b"3", b"~r": b"3"}
    for _ in range(100):
        counts = await _counts_hash(owner)
        if counts == settled:
            break
        await asyncio.sleep(0.02)
    assert counts == settled


async def test_unread_group_messages_of_other_members_leave_a_send_room(
    make_layer: LayerFactory,
) -> None:
    """The unread group entries bound a channel's count only until they are looked at:
    a send() to a channel they do not name is accepted."""
    owner, sender = make_layer(capacity=2), make_layer(capacity=2)
    member, other = await owner.new_channel(), await owner.new_channel()
    await sender.group_add("room", member)
    for message in numbered(3):
        await sender.group_send("room", message)  # the reader will drop the third
    await sender.send(other, {"type": "x", "n": 10})
    await sender.send(other, {"type": "x", "n": 11})
    with pytest.raises(ChannelFull):
        await sender.send(other, {"type": "x", "n": 12})
    with pytest.raises(ChannelFull):
        await sender.send(member, {"type": "x", "n": 13})
    assert [(await receive_within(owner, member))["n"] for _ in range(2)] == [0, 1]
    assert [(await receive_within(owner, other))["n"] for _ in range(2)] == [10, 11]
    assert await receives_nothing(owner, member)


async def test_expired_unread_group_messages_give_their_room_back(
    make_layer: LayerFactory,
) -> None:
    owner, sender = make_layer(capacity=2, expiry=1), make_layer(capacity=2, expiry=1)
    member = await owner.new_channel()
    await sender.group_add("room", member)
    for message in numbered(3):
        await sender.group_send("room", message)  # two queued, the third missed
    assert (await _counts_hash(owner))[b"~g"] == b"2"
    await asyncio.sleep(1.3)
    await sender.group_send("room", {"type": "x", "n": 7})
    # The two expired entries count as read; the new one is unread.
    assert await _counts_hash(owner) == {b"~g": b"3", b"~r": b"2"}
    assert (await receive_within(owner, member))["n"] == 7
    assert await receives_nothing(owner, member)


async def test_an_inbox_takes_no_group_entries_while_four_capacities_wait_unread(
    make_layer: LayerFactory,
) -> None:
    """A process that reads nothing (gone, or far behind) holds a bounded number
    of group entries, whatever the number of its channels and groups."""
    owner, sender = make_layer(capacity=1), make_layer(capacity=1)
    members = [await owner.new_channel() for _ in range(5)]
    for index, member in enumerate(members):
        await sender.group_add(f"room{index}", member)
    for index in range(5):
        await sender.group_send(f"room{index}", {"type": "x", "n": index})
    assert (await _counts_hash(owner))[b"~g"] == b"4"  # the fifth was refused
    for index, member in enumerate(members[:4]):
        assert (await receive_within(owner, member))["n"] == index
    assert await receives_nothing(owner, members[4])
    for _ in range(100):  # the reader reports what it read
        if (await _counts_hash(owner)).get(b"~r") == b"4":
            break
        await asyncio.sleep(0.02)
    await sender.group_send("room4", {"type": "x", "n": 40})
    assert (await receive_within(owner, members[4]))["n"] == 40


async def test_a_send_to_an_own_channel_gives_back_what_was_received_with_it(
    make_layer: LayerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The channel's received count rides on the send; other channels' counts
    wait for their coalesced give-back instead of costing this send a script."""
    monkeypatch.setattr(streams_layer.layer, "GIVE_BACK_DELAY_S", 30.0)
    layer = make_layer(capacity=8)
    channel, other = await layer.new_channel(), await layer.new_channel()
    for each in (channel, other):
        await _fill(layer, each, 1)
        await receive_within(layer, each)
        assert await _queued_in_redis(layer, each) == 1  # held back (30 s delay)
    await layer.send(channel, {"type": "x", "n": 1})
    assert await _queued_in_redis(layer, channel) == 1  # one received, one queued
    assert await _queued_in_redis(layer, other) == 1  # still waiting for its give-back


@pytest.mark.parametrize("seed", range(6))
async def test_mixed_sends_to_a_process_reading_nothing_keep_exact_capacity(
    make_layer: LayerFactory, seed: int
) -> None:
    """Random group and direct sends while the owner reads nothing: every channel
    gets exactly what a per-channel count of queued messages allows, in order."""
    rng = random.Random(seed)
    capacity = rng.randint(1, 4)
    owner, sender = make_layer(capacity=capacity), make_layer(capacity=capacity)
    channels = [await owner.new_channel() for _ in range(3)]
    for index, channel in enumerate(channels):
        await sender.group_add("all", channel)
        await sender.group_add(f"one{index}", channel)
    expected: list[list[int]] = [[] for _ in channels]
    for n in range(30):
        kind = rng.choice(["all", "one", "direct"])
        message = {"type": "x", "n": n}
        if kind == "all":
            await sender.group_send("all", message)
            targets = list(range(len(channels)))
        else:
            index = rng.randrange(len(channels))
            targets = [index]
            if kind == "one":
                await sender.group_send(f"one{index}", message)
            elif len(expected[index]) < capacity:
                await sender.send(channels[index], message)
            else:
                with pytest.raises(ChannelFull):
                    await sender.send(channels[index], message)
        for index in targets:
            if len(expected[index]) < capacity:
                expected[index].append(n)
    for index, channel in enumerate(channels):
        got = [(await receive_within(owner, channel))["n"] for _ in expected[index]]
        assert got == expected[index]
        assert await receives_nothing(owner, channel)
