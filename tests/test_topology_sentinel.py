"""The layer on Redis Sentinel, in channels_redis's sentinel ``hosts`` form.

The layer finds the master through the sentinels, and when the master is
killed it follows the promoted replica without a restart: writes resume
within 3 s and no acknowledged team message is lost.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest
import redis.asyncio

from devtools.redis_topologies import RedisSentinel
from streams_layer import ChannelFull, RedisStreamsChannelLayer
from tests.topologies import FailoverTraffic

pytestmark = [pytest.mark.sentinel, pytest.mark.timeout(90)]

RECEIVE_TIMEOUT_S = 5.0
MAX_WRITE_GAP_S = 3.0


@pytest.fixture
async def sentinel_layer(
    redis_sentinel: RedisSentinel, prefix: str
) -> AsyncIterator[RedisStreamsChannelLayer]:
    layer = RedisStreamsChannelLayer(hosts=redis_sentinel.hosts, prefix=prefix, capacity=5)
    yield layer
    await layer.close_pools()


async def test_spec_behaviours_through_sentinel(
    sentinel_layer: RedisStreamsChannelLayer, redis_sentinel: RedisSentinel, prefix: str
) -> None:
    layer = sentinel_layer
    await layer.send("normal", {"type": "t", "n": 1})
    assert (await asyncio.wait_for(layer.receive("normal"), RECEIVE_TIMEOUT_S))["n"] == 1
    specific = await layer.new_channel()
    await layer.group_add("room", specific)
    await layer.group_send("room", {"type": "t", "n": 2})
    assert (await asyncio.wait_for(layer.receive(specific), RECEIVE_TIMEOUT_S))["n"] == 2
    for i in range(5):
        await layer.send("full", {"type": "t", "i": i})
    with pytest.raises(ChannelFull):
        await layer.send("full", {"type": "t"})
    # The keys live on the master the sentinels name, and flush removes them.
    master = redis_sentinel.master()
    client = master_client(master.port)
    try:
        assert [key async for key in client.scan_iter(match=f"{prefix}*")]
        await layer.flush()
        assert [key async for key in client.scan_iter(match=f"{prefix}*")] == []
    finally:
        await client.aclose()


async def test_one_sentinel_url_selects_the_topology(
    redis_sentinel: RedisSentinel, prefix: str
) -> None:
    # The redis+sentinel:// form of the same topology: the layer finds the
    # master through the sentinels named in the URL.
    layer = RedisStreamsChannelLayer(hosts=[redis_sentinel.url], prefix=prefix, capacity=2)
    try:
        await layer.send("normal", {"type": "t", "n": 1})
        assert (await asyncio.wait_for(layer.receive("normal"), RECEIVE_TIMEOUT_S))["n"] == 1
        specific = await layer.new_channel()
        await layer.group_add("room", specific)
        await layer.group_send("room", {"type": "t", "n": 2})
        assert (await asyncio.wait_for(layer.receive(specific), RECEIVE_TIMEOUT_S))["n"] == 2
        await layer.send("full", {"type": "t"})
        await layer.send("full", {"type": "t"})
        with pytest.raises(ChannelFull):
            await layer.send("full", {"type": "t"})
        client = master_client(redis_sentinel.master().port)
        try:
            assert await client.exists(f"{prefix}:chan:{{full}}") == 1
        finally:
            await client.aclose()
    finally:
        await layer.close_pools()


def master_client(port: int) -> redis.asyncio.Redis:
    """A plain client to one server, for asserting through Redis itself."""
    return redis.asyncio.Redis(port=port)


@pytest.mark.slow
async def test_writes_resume_quickly_when_the_master_dies(
    own_sentinel: RedisSentinel, prefix: str
) -> None:
    sender = RedisStreamsChannelLayer(hosts=own_sentinel.hosts, prefix=prefix, capacity=100_000)
    receiver = RedisStreamsChannelLayer(hosts=own_sentinel.hosts, prefix=prefix, capacity=100_000)
    traffic = FailoverTraffic(sender=sender, receiver=receiver, busy="busy", work="work")
    try:
        await traffic.start()
        await asyncio.sleep(0.5)
        # Replication is asynchronous; see the cluster failover test.
        await asyncio.to_thread(own_sentinel.wait_replicated)
        killed = own_sentinel.kill_master()
        killed_at = time.monotonic()
        promoted = asyncio.create_task(asyncio.to_thread(own_sentinel.wait_failover))
        await traffic.wait_all_arrive_after(killed_at)
        promoted_s = await promoted
        resumed_at = traffic.busy_sent.first_ok_started_after(killed_at)
        assert resumed_at is not None
        gap_s = resumed_at - killed_at
        await asyncio.sleep(0.5)
        await traffic.stop_sending()
        missing = await traffic.wait_team_received_everything()
        print(
            f"\nsentinel failover: write gap {gap_s:.2f} s, replica promoted after "
            f"{promoted_s:.2f} s (killed port {killed.port}); "
            f"send errors {traffic.error_summary()}; team sent {len(traffic.work_sent.ok)}, "
            f"missing {sorted(missing)[:10]}"
        )
        assert own_sentinel.master().port != killed.port
        assert gap_s < MAX_WRITE_GAP_S
        assert missing == set()
    finally:
        await traffic.aclose()
        await sender.close_pools()
        await receiver.close_pools()
