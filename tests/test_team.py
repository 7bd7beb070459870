"""The team API on a real Redis: acknowledgements, claims, dead letters, trimming, shutdown.

Assertions go through the public API or through Redis itself (XPENDING,
XINFO, XLEN from a separate client).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio

from streams_layer import RedisStreamsChannelLayer
from streams_layer.exceptions import RedisCommandError
from streams_layer.keys import KeySpace
from streams_layer.team import Delivery, TeamConsumer
from tests.layer_helpers import LayerFactory, numbered

CLAIM_IDLE_MS = 200
WAIT_S = 10.0


@pytest.fixture
async def layers(redis_url: str, prefix: str) -> AsyncIterator[LayerFactory]:
    factory = LayerFactory([redis_url], prefix)
    try:
        yield factory
    finally:
        await factory.aclose()


def new_layer(layers: LayerFactory, **config: Any) -> RedisStreamsChannelLayer:
    config.setdefault("capacity", 100_000)
    layer: RedisStreamsChannelLayer = layers(**config)
    return layer


async def take(team: TeamConsumer, count: int, timeout_s: float = WAIT_S) -> list[Delivery]:
    """The next ``count`` deliveries of ``team`` (not settled)."""

    async def collect() -> list[Delivery]:
        return [await team.__anext__() for _ in range(count)]

    return await asyncio.wait_for(collect(), timeout_s)


async def send_numbered(layer: RedisStreamsChannelLayer, channel: str, count: int) -> None:
    for message in numbered(count):
        await layer.send(channel, message)


async def pending_of(client: redis.asyncio.Redis, key: str, team: str) -> int:
    summary: Any = await client.xpending(key, team)
    return int(summary["pending"])


async def wait_for(condition: Any, timeout_s: float = WAIT_S) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not await condition():
        if asyncio.get_running_loop().time() > deadline:
            pytest.fail("condition not reached in time")
        await asyncio.sleep(0.02)


async def test_team_acknowledges_after_handling_and_trims(
    layers: LayerFactory, redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    layer = new_layer(layers)
    key = KeySpace(prefix).channel("work")
    await send_numbered(layer, "work", 20)
    async with layer.consume("work", team="t", consumer="c1", batch=7) as team:
        deliveries = await take(team, 20)
        assert [d.message["n"] for d in deliveries] == list(range(20))
        assert all(d.deliveries == 1 for d in deliveries)
        # Read but not acknowledged: all pending in Redis, nothing trimmed.
        assert await pending_of(redis_client, key, "t") == 20
        assert await redis_client.xlen(key) == 20
        for delivery in deliveries[:15]:
            await delivery.ack()

        async def fifteen_acked() -> bool:
            return await pending_of(redis_client, key, "t") == 5

        await wait_for(fifteen_acked)
        assert await redis_client.xlen(key) == 5
        for delivery in deliveries[15:]:
            await delivery.ack()
    assert await pending_of(redis_client, key, "t") == 0
    assert await redis_client.xlen(key) == 0


async def test_every_team_receives_every_message_and_trim_waits_for_the_slowest(
    layers: LayerFactory, redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    layer = new_layer(layers)
    key = KeySpace(prefix).channel("fan")
    async with (
        layer.consume("fan", team="a", consumer="a1") as team_a,
        layer.consume("fan", team="b", consumer="b1") as team_b,
    ):
        await send_numbered(layer, "fan", 10)
        got_a = await take(team_a, 10)
        got_b = await take(team_b, 10)
        assert [d.message["n"] for d in got_a] == list(range(10))
        assert [d.message["n"] for d in got_b] == list(range(10))
        for delivery in got_a:
            await delivery.ack()
        for delivery in got_b[:4]:
            await delivery.ack()

        async def a_done_b_partial() -> bool:
            return (
                await pending_of(redis_client, key, "a") == 0
                and await pending_of(redis_client, key, "b") == 6
            )

        await wait_for(a_done_b_partial)
        # Team b still holds 6 entries: exactly those stay.
        assert await redis_client.xlen(key) == 6
        for delivery in got_b[4:]:
            await delivery.ack()
    assert await redis_client.xlen(key) == 0


async def test_members_of_one_team_share_the_messages(layers: LayerFactory) -> None:
    layer = new_layer(layers)
    other = new_layer(layers)
    await send_numbered(layer, "share", 40)
    async with (
        layer.consume("share", team="t", consumer="m1", batch=5) as one,
        other.consume("share", team="t", consumer="m2", batch=5) as two,
    ):
        first = await take(one, 5)
        second = await take(two, 35)
        numbers = [d.message["n"] for d in first + second]
        assert sorted(numbers) == list(range(40))
        for delivery in first + second:
            await delivery.ack()


async def test_unacknowledged_entries_of_a_dead_member_are_claimed_by_a_teammate(
    layers: LayerFactory, redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    layer = new_layer(layers)
    await send_numbered(layer, "jobs", 6)
    # The first member reads everything and "dies" holding it: never acked,
    # never closed (a closed member would still keep its pending entries).
    doomed = layer.consume("jobs", team="t", consumer="doomed", claim_idle_ms=CLAIM_IDLE_MS)
    await doomed.__aenter__()
    held = await take(doomed, 6)
    assert len(held) == 6
    async with layer.consume(
        "jobs", team="t", consumer="rescuer", claim_idle_ms=CLAIM_IDLE_MS
    ) as rescuer:
        claimed = await take(rescuer, 6)
        assert sorted(d.message["n"] for d in claimed) == list(range(6))
        assert all(d.deliveries == 2 for d in claimed)
        for delivery in claimed:
            await delivery.ack()
    key = KeySpace(prefix).channel("jobs")
    assert await pending_of(redis_client, key, "t") == 0
    consumers = await redis_client.xinfo_consumers(key, "t")
    by_name = {c["name"].decode(): int(c["pending"]) for c in consumers}
    assert by_name == {"doomed": 0}  # the rescuer left the team when it closed


async def test_a_failing_message_reaches_the_dead_letters_and_others_keep_flowing(
    layers: LayerFactory, redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    layer = new_layer(layers)
    await send_numbered(layer, "flaky", 10)
    attempts: list[int] = []
    handled: list[int] = []

    async def handler(message: dict[str, Any]) -> None:
        if message["n"] == 3:
            attempts.append(message["n"])
            raise ValueError("cannot handle 3")
        handled.append(message["n"])

    async with layer.consume(
        "flaky", team="t", consumer="c", claim_idle_ms=CLAIM_IDLE_MS, max_deliveries=3
    ) as team:
        runner = asyncio.create_task(team.run(handler, concurrency=2))

        async def dead_lettered() -> bool:
            return await redis_client.xlen(KeySpace(prefix).dead("flaky")) == 1

        await wait_for(dead_lettered)
        assert sorted(handled) == [n for n in range(10) if n != 3]
        await layer.send("flaky", {"type": "test.n", "n": 100})

        async def later_message_handled() -> bool:
            return 100 in handled

        await wait_for(later_message_handled)
        team.stop()
        await asyncio.wait_for(runner, WAIT_S)
    assert attempts == [3, 3, 3]
    dead = await layer.dead_letters("flaky")
    assert len(dead) == 1
    letter = dead[0]
    assert letter.message == {"type": "test.n", "n": 3}
    assert letter.team == "t"
    assert letter.consumer == "c"
    assert letter.deliveries == 3
    assert "ValueError: cannot handle 3" in letter.reason
    key = KeySpace(prefix).channel("flaky")
    assert await pending_of(redis_client, key, "t") == 0

    # Replayed, the message is delivered again and leaves the dead letters.
    new_id = await layer.replay_dead_letter("flaky", letter.id)
    assert new_id is not None
    assert await layer.dead_letters("flaky") == []
    assert await layer.replay_dead_letter("flaky", letter.id) is None
    async with layer.consume("flaky", team="t", consumer="c") as team:
        [again] = await take(team, 1)
        assert again.id == new_id
        assert again.message == {"type": "test.n", "n": 3}
        await again.ack()


async def test_a_member_that_keeps_dying_sends_the_message_to_the_dead_letters(
    layers: LayerFactory, prefix: str, redis_client: redis.asyncio.Redis
) -> None:
    layer = new_layer(layers)
    await layer.send("poison", {"type": "test.n", "n": 1})
    for attempt in range(2):
        member = layer.consume(
            "poison", team="t", consumer=f"dies-{attempt}", claim_idle_ms=CLAIM_IDLE_MS
        )
        await member.__aenter__()
        [delivery] = await take(member, 1)
        assert delivery.deliveries == attempt + 1
        # dies without acknowledging or closing
    async with layer.consume(
        "poison", team="t", consumer="last", claim_idle_ms=CLAIM_IDLE_MS, max_deliveries=2
    ) as survivor:

        async def dead() -> bool:
            return await redis_client.xlen(KeySpace(prefix).dead("poison")) == 1

        reader = asyncio.create_task(survivor.__anext__())
        await wait_for(dead)
        assert not reader.done()  # it was dead-lettered, never handed out
        survivor.stop()
        reader.cancel()
        await asyncio.gather(reader, return_exceptions=True)
    [letter] = await layer.dead_letters("poison")
    assert letter.deliveries == 3
    assert letter.reason == "delivered 3 times without acknowledgement"


async def test_a_slow_member_handles_its_buffered_entries_once_and_dead_letters_none(
    layers: LayerFactory, redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    layer = new_layer(layers)
    await send_numbered(layer, "slow", 8)
    handled: list[tuple[int, int]] = []
    async with layer.consume(
        "slow", team="t", consumer="c", batch=8, claim_idle_ms=CLAIM_IDLE_MS, max_deliveries=1
    ) as team:

        async def work() -> None:
            async for delivery in team:
                async with delivery:
                    # Well under claim_idle_ms; the last entry waits 420 ms in the buffer.
                    await asyncio.sleep(0.06)
                    handled.append((delivery.message["n"], delivery.deliveries))

        runner = asyncio.create_task(work())

        async def settled() -> bool:
            return len(handled) + await redis_client.xlen(KeySpace(prefix).dead("slow")) >= 8

        await wait_for(settled)
        await asyncio.sleep(2 * CLAIM_IDLE_MS / 1000)  # room for claims that should not come
        team.stop()
        await asyncio.wait_for(runner, WAIT_S)
    assert handled == [(n, 1) for n in range(8)]
    assert await layer.dead_letters("slow") == []


async def test_a_teammate_does_not_claim_what_a_slow_live_member_has_buffered(
    layers: LayerFactory,
) -> None:
    layer = new_layer(layers)
    await send_numbered(layer, "buffered", 6)
    handled: list[tuple[int, int]] = []
    async with layer.consume(
        "buffered", team="t", consumer="slow", batch=6, claim_idle_ms=CLAIM_IDLE_MS
    ) as slow:
        [delivery] = await take(slow, 1)  # all six are read: five wait in its buffer
        async with layer.consume(
            "buffered", team="t", consumer="idle", claim_idle_ms=CLAIM_IDLE_MS
        ) as idle:
            stolen = asyncio.create_task(idle.__anext__())  # claims every 100 ms
            while True:
                await asyncio.sleep(0.06)  # the last waits 300 ms in the buffer
                handled.append((delivery.message["n"], delivery.deliveries))
                await delivery.ack()
                if len(handled) == 6:
                    break
                [delivery] = await take(slow, 1)
            await asyncio.sleep(CLAIM_IDLE_MS / 1000)
            assert not stolen.done()
            stolen.cancel()
            await asyncio.gather(stolen, return_exceptions=True)
    assert handled == [(n, 1) for n in range(6)]


async def test_an_acknowledgement_reaches_redis_before_the_members_next_claim(
    layers: LayerFactory,
) -> None:
    layer = new_layer(layers)
    await send_numbered(layer, "acked", 2)
    async with layer.consume("acked", team="t", consumer="c", batch=2, claim_idle_ms=600) as team:
        first = await team.__anext__()
        await asyncio.sleep(0.03)
        await first.ack()
        # Handed out 30 ms after its read (too soon for a refresh) and handled
        # for 590 ms: under claim_idle_ms, but idle longer when acknowledged.
        second = await team.__anext__()
        await asyncio.sleep(0.59)
        await second.ack()
        # In this same task, the next read runs the (due) claim at once,
        # before the ack task has even started.
        asyncio.get_running_loop().call_later(0.3, team.stop)
        again = [delivery.id async for delivery in team]
    assert again == []


async def test_entries_a_dead_member_read_but_never_handed_out_are_claimed_by_a_teammate(
    layers: LayerFactory,
) -> None:
    layer = new_layer(layers)
    await send_numbered(layer, "orphans", 4)
    doomed = layer.consume(
        "orphans", team="t", consumer="doomed", batch=4, claim_idle_ms=CLAIM_IDLE_MS
    )
    await doomed.__aenter__()
    await take(doomed, 1)  # dies with three entries in its buffer, never refreshed again
    async with layer.consume(
        "orphans", team="t", consumer="rescuer", claim_idle_ms=CLAIM_IDLE_MS
    ) as rescuer:
        claimed = await take(rescuer, 4)
        assert sorted((d.message["n"], d.deliveries) for d in claimed) == [(n, 2) for n in range(4)]
        for delivery in claimed:
            await delivery.ack()


async def test_a_member_that_paused_leaves_buffered_entries_a_teammate_claimed(
    layers: LayerFactory, redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    layer = new_layer(layers)
    key = KeySpace(prefix).channel("paused")
    await send_numbered(layer, "paused", 3)
    async with layer.consume(
        "paused", team="t", consumer="pauser", batch=3, claim_idle_ms=CLAIM_IDLE_MS
    ) as pauser:
        [first] = await take(pauser, 1)
        await first.ack()
        # The pauser stops iterating for longer than claim_idle_ms.
        async with layer.consume(
            "paused", team="t", consumer="other", claim_idle_ms=CLAIM_IDLE_MS
        ) as other:
            claimed = await take(other, 2)
            assert [(d.message["n"], d.deliveries) for d in claimed] == [(1, 2), (2, 2)]
            # Back, it neither hands them out again nor takes them back.
            asyncio.get_running_loop().call_later(0.1, pauser.stop)
            again = [delivery.id async for delivery in pauser]
            assert again == []
            consumers = await redis_client.xinfo_consumers(key, "t")
            assert {c["name"]: c["pending"] for c in consumers} == {b"pauser": 0, b"other": 2}
            for delivery in claimed:
                await delivery.ack()


async def test_dead_letters_raise_a_typed_error_for_a_key_of_another_type(
    layers: LayerFactory, redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    layer = new_layer(layers)
    await redis_client.set(KeySpace(prefix).dead("garbage"), "not a stream")
    with pytest.raises(RedisCommandError, match="WRONGTYPE"):
        await layer.dead_letters("garbage")


async def test_dead_letters_skip_entries_the_layer_did_not_write(
    layers: LayerFactory, redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    layer = new_layer(layers)
    key = KeySpace(prefix).dead("garbage")
    await redis_client.xadd(key, {"m": "x", "deliveries": "many"})
    await redis_client.xadd(key, {"m": "x", "team": b"\xff"})
    kept = await redis_client.xadd(
        key, {"id": "1-0", "team": "t", "consumer": "c", "deliveries": "2", "reason": "r"}
    )
    [letter] = await layer.dead_letters("garbage")
    assert (letter.id.encode(), letter.team, letter.deliveries, letter.message) == (
        kept,
        "t",
        2,
        None,
    )


async def test_pending_entries_deleted_from_the_stream_leave_the_pending_list(
    layers: LayerFactory, redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    layer = new_layer(layers)
    key = KeySpace(prefix).channel("gone")
    await send_numbered(layer, "gone", 3)
    holder = layer.consume("gone", team="t", consumer="holder", claim_idle_ms=CLAIM_IDLE_MS)
    await holder.__aenter__()
    held = await take(holder, 3)
    await redis_client.xdel(key, held[1].id)
    async with layer.consume(
        "gone", team="t", consumer="claimer", claim_idle_ms=CLAIM_IDLE_MS
    ) as claimer:
        got = await take(claimer, 2)
        assert sorted(d.message["n"] for d in got) == [0, 2]
        for delivery in got:
            await delivery.ack()

        async def clean() -> bool:
            return await pending_of(redis_client, key, "t") == 0

        await wait_for(clean)


async def test_graceful_shutdown_finishes_in_flight_messages_and_leaves_the_team(
    layers: LayerFactory, redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    layer = new_layer(layers)
    key = KeySpace(prefix).channel("calm")
    await send_numbered(layer, "calm", 30)
    handled: list[int] = []
    started = asyncio.Event()

    async def slow(message: dict[str, Any]) -> None:
        started.set()
        await asyncio.sleep(0.01)
        handled.append(message["n"])

    async with layer.consume("calm", team="t", consumer="c", batch=30) as team:
        runner = asyncio.create_task(team.run(slow, concurrency=3))
        await started.wait()
        team.stop()
        await asyncio.wait_for(runner, WAIT_S)
    # Every entry read in the batch was finished and acknowledged.
    assert sorted(handled) == list(range(30))
    assert await pending_of(redis_client, key, "t") == 0
    assert await redis_client.xinfo_consumers(key, "t") == []


async def test_context_manager_leaves_a_failed_message_pending(
    layers: LayerFactory, redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    layer = new_layer(layers)
    key = KeySpace(prefix).channel("cm")
    await send_numbered(layer, "cm", 2)
    async with layer.consume("cm", team="t", consumer="c") as team:
        first, second = await take(team, 2)
        async with first:
            pass
        async with second:
            raise RuntimeError("boom")
    assert await pending_of(redis_client, key, "t") == 1
    consumers = await redis_client.xinfo_consumers(key, "t")
    assert [(c["name"], c["pending"]) for c in consumers] == [(b"c", 1)]


def test_consume_refuses_process_specific_channels_and_bad_settings(
    redis_url: str, prefix: str
) -> None:
    layer = RedisStreamsChannelLayer(hosts=[redis_url], prefix=prefix)
    with pytest.raises(TypeError, match="process-specific"):
        layer.consume("specific.abc!def", team="t")
    with pytest.raises(ValueError, match="max_deliveries"):
        layer.consume("x", team="t", max_deliveries=0)
    with pytest.raises(ValueError, match="team"):
        layer.consume("x", team="")
