"""The Channels layer spec: send, receive, new_channel, groups, flush, close, extensions."""

from __future__ import annotations

import asyncio
import logging
import re
import subprocess
import sys
from typing import Any

import pytest
import redis
import redis.asyncio
from channels.layers import BaseChannelLayer

from devtools.redis_servers import RedisServer
from tests.layer_helpers import (
    LayerFactory,
    keys_under,
    numbered,
    receive_within,
    receives_nothing,
)


@pytest.fixture
def layer(make_layer: LayerFactory) -> Any:
    return make_layer()


def test_extensions_are_groups_and_flush(layer: Any) -> None:
    assert layer.extensions == ["groups", "flush"]


def test_layer_is_a_base_channel_layer(layer: Any) -> None:
    assert isinstance(layer, BaseChannelLayer)


async def test_message_sent_to_normal_channel_is_received(layer: Any) -> None:
    message = {"type": "test.message", "text": "hello", "n": 1}
    await layer.send("test-channel", message)
    assert await receive_within(layer, "test-channel") == message


async def test_message_sent_before_anyone_receives_is_kept(make_layer: LayerFactory) -> None:
    sender = make_layer()
    await sender.send("late.reader", {"type": "x", "n": 7})
    receiver = make_layer()
    assert await receive_within(receiver, "late.reader") == {"type": "x", "n": 7}


async def test_message_sent_to_process_specific_channel_is_received(layer: Any) -> None:
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "test.message", "text": "to you"})
    assert await receive_within(layer, channel) == {"type": "test.message", "text": "to you"}


async def test_other_layer_instance_can_send_to_process_specific_channel(
    make_layer: LayerFactory,
) -> None:
    owner, sender = make_layer(), make_layer()
    channel = await owner.new_channel()
    await sender.send(channel, {"type": "test.message", "from": "sender"})
    assert await receive_within(owner, channel) == {"type": "test.message", "from": "sender"}


async def test_message_values_round_trip(layer: Any) -> None:
    message = {
        "type": "test.values",
        "bytes": b"\x00\xffbin",
        "text": "naïve ünïcode ✓ 日本",
        "big": 2**63 - 1,
        "small": -(2**63),
        "float": 1.5,
        "flags": [True, False, None],
        "nested": {"a": [1, {"b": "c"}]},
    }
    channel = await layer.new_channel()
    await layer.send(channel, message)
    await layer.send("values", message)
    assert await receive_within(layer, channel) == message
    assert await receive_within(layer, "values") == message


async def test_receive_returns_message_without_reserved_key(layer: Any) -> None:
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "x"})
    received = await receive_within(layer, channel)
    assert "__asgi_channel__" not in received


async def test_messages_of_normal_channel_arrive_in_send_order(layer: Any) -> None:
    for message in numbered(50):
        await layer.send("fifo", message)
    received = [(await receive_within(layer, "fifo"))["n"] for _ in range(50)]
    assert received == list(range(50))


async def test_messages_of_process_specific_channel_arrive_in_send_order(
    make_layer: LayerFactory,
) -> None:
    owner, sender = make_layer(), make_layer()
    channel = await owner.new_channel()
    for message in numbered(50):
        await sender.send(channel, message)
    received = [(await receive_within(owner, channel))["n"] for _ in range(50)]
    assert received == list(range(50))


async def test_interleaved_channels_keep_their_own_order(layer: Any) -> None:
    specific = await layer.new_channel()
    other = await layer.new_channel()
    for i in range(20):
        await layer.send(specific if i % 2 else other, {"type": "x", "n": i})
    odd = [(await receive_within(layer, specific))["n"] for _ in range(10)]
    even = [(await receive_within(layer, other))["n"] for _ in range(10)]
    assert odd == list(range(1, 20, 2))
    assert even == list(range(0, 20, 2))


async def test_each_message_is_received_at_most_once_by_concurrent_receivers(
    layer: Any,
) -> None:
    receivers = [asyncio.ensure_future(receive_within(layer, "once", 3.0)) for _ in range(5)]
    await asyncio.sleep(0.1)
    for message in numbered(5):
        await layer.send("once", message)
    received = sorted(m["n"] for m in await asyncio.gather(*receivers))
    assert received == [0, 1, 2, 3, 4]
    assert await receives_nothing(layer, "once")


async def test_message_received_by_one_layer_instance_is_not_received_by_another(
    make_layer: LayerFactory,
) -> None:
    first, second = make_layer(), make_layer()
    await first.send("shared", {"type": "x", "n": 1})
    assert (await receive_within(first, "shared"))["n"] == 1
    assert await receives_nothing(second, "shared")


async def test_two_layer_instances_share_a_normal_channel_without_duplicates(
    make_layer: LayerFactory,
) -> None:
    count = 200
    # Room for every message: this is about sharing, not about capacity (the
    # sender may run ahead of both receivers on a loaded machine).
    first, second = make_layer(capacity=count), make_layer(capacity=count)

    async def drain(layer: Any) -> list[int]:
        got: list[int] = []
        while True:
            try:
                got.append((await receive_within(layer, "work", 1.0))["n"])
            except TimeoutError:
                return got

    tasks = [asyncio.ensure_future(drain(first)), asyncio.ensure_future(drain(second))]
    for message in numbered(count):
        await first.send("work", message)
    got_first, got_second = await asyncio.gather(*tasks)
    assert sorted(got_first + got_second) == list(range(count))
    # Each receiver sees its share in send order.
    assert got_first == sorted(got_first)
    assert got_second == sorted(got_second)


async def test_new_channel_has_specific_prefix_and_is_valid(layer: Any) -> None:
    channel = await layer.new_channel()
    assert channel.startswith("specific.")
    assert "!" in channel
    assert not channel.endswith("!")
    assert layer.require_valid_channel_name(channel)


@pytest.mark.parametrize("channel_prefix", ["websocket", "http.response", "a-b_c"])
async def test_new_channel_uses_given_prefix(layer: Any, channel_prefix: str) -> None:
    channel = await layer.new_channel(prefix=channel_prefix)
    assert re.fullmatch(re.escape(channel_prefix) + r"\.[^!]+![\w\-.]+", channel), channel
    await layer.send(channel, {"type": "x", "p": channel_prefix})
    assert await receive_within(layer, channel) == {"type": "x", "p": channel_prefix}


async def test_new_channel_names_are_unique_and_share_the_instance_client_part(
    make_layer: LayerFactory,
) -> None:
    first, second = make_layer(), make_layer()
    names = [await first.new_channel() for _ in range(20)]
    assert len(set(names)) == 20
    clients = {name.split("!")[0] for name in names}
    assert len(clients) == 1, "one layer instance has one <client> part"
    other = await second.new_channel()
    assert other.split("!")[0] not in clients, "two layer instances have distinct inboxes"


async def test_group_send_reaches_every_member(make_layer: LayerFactory) -> None:
    first, second = make_layer(), make_layer()
    members = [await first.new_channel(), await first.new_channel(), await second.new_channel()]
    for member in members:
        await first.group_add("room", member)
    await first.group_send("room", {"type": "chat.message", "text": "hi"})
    for layer, member in zip([first, first, second], members, strict=True):
        assert await receive_within(layer, member) == {"type": "chat.message", "text": "hi"}
    for layer, member in zip([first, first, second], members, strict=True):
        assert await receives_nothing(layer, member, 0.2)


async def test_group_send_reaches_a_normal_channel_member(layer: Any) -> None:
    await layer.group_add("room", "normal.member")
    await layer.group_send("room", {"type": "x", "n": 3})
    assert await receive_within(layer, "normal.member") == {"type": "x", "n": 3}


async def test_group_discard_stops_delivery_to_that_member(layer: Any) -> None:
    staying, leaving = await layer.new_channel(), await layer.new_channel()
    await layer.group_add("room", staying)
    await layer.group_add("room", leaving)
    await layer.group_discard("room", leaving)
    await layer.group_send("room", {"type": "x"})
    assert await receive_within(layer, staying) == {"type": "x"}
    assert await receives_nothing(layer, leaving)


async def test_group_add_twice_delivers_once(layer: Any) -> None:
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    await layer.group_add("room", channel)
    await layer.group_send("room", {"type": "x"})
    assert await receive_within(layer, channel) == {"type": "x"}
    assert await receives_nothing(layer, channel)


async def test_group_send_to_empty_or_unknown_group_does_nothing(layer: Any) -> None:
    await layer.group_send("nobody-here", {"type": "x"})
    channel = await layer.new_channel()
    await layer.group_add("emptied", channel)
    await layer.group_discard("emptied", channel)
    await layer.group_send("emptied", {"type": "x"})
    assert await receives_nothing(layer, channel)


async def test_group_discard_of_non_member_is_harmless(layer: Any) -> None:
    await layer.group_discard("room", "never.added")
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    await layer.group_discard("room", "never.added")
    await layer.group_send("room", {"type": "x"})
    assert await receive_within(layer, channel) == {"type": "x"}


async def test_group_messages_keep_order_per_member(layer: Any) -> None:
    channel = await layer.new_channel()
    await layer.group_add("ordered", channel)
    for message in numbered(20):
        await layer.group_send("ordered", message)
    received = [(await receive_within(layer, channel))["n"] for _ in range(20)]
    assert received == list(range(20))


async def test_flush_removes_every_key_under_prefix(
    layer: Any, prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "x"})
    await layer.send("normal", {"type": "x"})
    await layer.group_add("room", channel)
    assert await keys_under(redis_client, prefix)
    await layer.flush()
    assert await keys_under(redis_client, prefix) == []
    assert await receives_nothing(layer, "normal")
    assert await receives_nothing(layer, channel)


async def test_flush_ends_a_read_ahead_instead_of_opening_the_inbox_again(
    layer: Any, prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    """After two receives the inbox reader reads ahead; flush() deletes its
    inbox under it, and the reader stops rather than create the inbox again."""
    channel = await layer.new_channel()
    for n in range(2):
        await layer.send(channel, {"type": "x", "n": n})
        assert (await receive_within(layer, channel))["n"] == n
    await layer.flush()
    await asyncio.sleep(0.3)
    assert await keys_under(redis_client, prefix) == []
    await layer.send(channel, {"type": "x", "n": 2})
    assert (await receive_within(layer, channel))["n"] == 2


async def test_flush_leaves_keys_of_other_prefixes(
    make_layer: LayerFactory, prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    other_prefix = prefix + "other"
    mine, other = make_layer(prefix=prefix + "mine"), make_layer(prefix=other_prefix)
    await other.send("kept", {"type": "kept"})
    await mine.send("gone", {"type": "gone"})
    await mine.flush()
    assert await keys_under(redis_client, other_prefix)
    assert await receive_within(other, "kept") == {"type": "kept"}


async def test_flush_leaves_keys_of_a_longer_prefix_that_starts_with_its_own(
    make_layer: LayerFactory, prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    # "asgi" and "asgi:v2" on one server, as in a rolling deploy to a new prefix.
    old, new = make_layer(prefix=prefix), make_layer(prefix=prefix + ":v2")
    channel = await new.new_channel()
    await new.group_add("room", channel)
    await new.send("kept", {"type": "kept"})
    await old.send("gone", {"type": "gone"})
    await old.flush()
    assert await keys_under(redis_client, prefix + ":v2")
    assert await receive_within(new, "kept") == {"type": "kept"}
    await new.group_send("room", {"type": "still a member"})
    assert await receive_within(new, channel) == {"type": "still a member"}


async def test_layer_works_after_flush(layer: Any) -> None:
    channel = await layer.new_channel()
    await layer.send("normal", {"type": "before"})
    assert await receive_within(layer, "normal") == {"type": "before"}
    await layer.send(channel, {"type": "before"})
    assert await receive_within(layer, channel) == {"type": "before"}
    await layer.flush()
    await layer.send("normal", {"type": "after"})
    await layer.send(channel, {"type": "after"})
    await layer.group_add("room", channel)
    await layer.group_send("room", {"type": "group"})
    assert await receive_within(layer, "normal") == {"type": "after"}
    assert await receive_within(layer, channel) == {"type": "after"}
    assert await receive_within(layer, channel) == {"type": "group"}


async def _client_count(client: redis.asyncio.Redis) -> int:
    return len(await client.client_list())


async def _settled_client_count(client: redis.asyncio.Redis, at_most: int) -> int:
    deadline = asyncio.get_running_loop().time() + 2.0
    count = await _client_count(client)
    while count > at_most and asyncio.get_running_loop().time() < deadline:
        await asyncio.sleep(0.05)
        count = await _client_count(client)
    return count


@pytest.mark.parametrize("method", ["close", "close_pools"])
async def test_close_releases_every_connection(
    make_layer: LayerFactory, redis_client: redis.asyncio.Redis, method: str
) -> None:
    baseline = await _settled_client_count(redis_client, 1)
    layer = make_layer()
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "x"})
    await layer.send("normal", {"type": "x"})
    assert await receive_within(layer, channel) == {"type": "x"}
    assert await receive_within(layer, "normal") == {"type": "x"}
    assert await _client_count(redis_client) > baseline
    await getattr(layer, method)()
    assert await _settled_client_count(redis_client, baseline) <= baseline


async def test_an_empty_message_handed_to_a_waiting_receive_is_returned(
    make_layer: LayerFactory,
) -> None:
    """An empty dict is a valid message, and falsy: the hand-off must not take it for none."""
    owner, sender = make_layer(), make_layer()
    channel = await owner.new_channel()
    waiting = asyncio.ensure_future(owner.receive(channel))
    await asyncio.sleep(0.1)  # the receive waits on its empty buffer
    await sender.send(channel, {})
    assert await asyncio.wait_for(waiting, 5) == {}


async def test_close_waits_for_a_capacity_give_back_in_flight(
    make_layer: LayerFactory, caplog: pytest.LogCaptureFixture
) -> None:
    """close() right after a receive lets the give-back it started finish."""
    layer = make_layer(capacity=4)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "x"})
    assert await receive_within(layer, channel) == {"type": "x"}  # a quarter: give back now
    await asyncio.sleep(0)  # the give-back is queued, not yet answered
    with caplog.at_level(logging.WARNING, logger="streams_layer"):
        await layer.close()
    assert not [r for r in caplog.records if "capacity" in r.getMessage()]
    sender = make_layer(capacity=4)
    for n in range(4):  # all the capacity came back
        await sender.send(channel, {"type": "x", "n": n})


async def test_close_pools_then_reuse_works(layer: Any) -> None:
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "x", "n": 1})
    assert (await receive_within(layer, channel))["n"] == 1
    await layer.close_pools()
    await layer.send(channel, {"type": "x", "n": 2})
    await layer.send("normal", {"type": "x", "n": 3})
    assert (await receive_within(layer, channel))["n"] == 2
    assert (await receive_within(layer, "normal"))["n"] == 3


ENDS_WITHOUT_CLOSE = """
import asyncio, sys
from streams_layer import RedisStreamsChannelLayer
layer = RedisStreamsChannelLayer(hosts=[sys.argv[1]], prefix=sys.argv[2])
async def main():
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "x"})
    await layer.receive(channel)  # its capacity is given back within 5 ms, or at close
    return channel
print(layer.keys.inbox_counts(layer.client_id), asyncio.run(main()))
"""


def test_a_program_that_ends_without_close_gives_back_what_it_received(
    own_redis: RedisServer, prefix: str
) -> None:
    """asyncio.run (or async_to_sync) closing its loop closes the layer's state
    there as close() does: the received message's count leaves Redis at once,
    and no give-back is left to fire on the closing loop. In a child process,
    so that the loop is the program's own."""
    args = (own_redis.url, prefix)
    child = subprocess.run(
        [sys.executable, "-W", "ignore::ResourceWarning", "-c", ENDS_WITHOUT_CLOSE, *args],
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert child.returncode == 0, child.stderr
    assert child.stderr == ""
    counts_key, channel = child.stdout.split()
    assert redis.Redis.from_url(own_redis.url).hget(counts_key, channel) is None
