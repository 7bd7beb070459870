"""Robustness: several event loops, cancelled receives, long idle, a Redis restart."""

from __future__ import annotations

import asyncio
import gc
import logging
import random
import threading
import time
import weakref
from collections.abc import Callable, Coroutine
from typing import Any

import pytest
import redis.asyncio
from asgiref.sync import async_to_sync

import streams_layer.layer
from devtools.redis_servers import RedisServer
from streams_layer.exceptions import StreamsLayerError
from streams_layer.inbox import READER_CONSUMER, READER_GROUP
from tests.layer_helpers import (
    LayerFactory,
    close_layer,
    layer_class,
    numbered,
    receive_within,
    receives_nothing,
)

# What a caller may see while Redis is away: the layer's own errors or the
# builtin ConnectionError (which LayerConnectionError also is).
TYPED_ERRORS = (StreamsLayerError, ConnectionError)


# -- several event loops ----------------------------------------------------------------


def test_one_layer_serves_several_event_loops_in_turn_via_async_to_sync(
    redis_url: str, prefix: str
) -> None:
    layer = layer_class()(hosts=[redis_url], prefix=prefix)
    try:
        channel = async_to_sync(layer.new_channel)()
        for round_no in range(4):
            # Every async_to_sync call from a plain thread runs in a new loop.
            async_to_sync(layer.send)("loops.normal", {"type": "x", "n": round_no})
            async_to_sync(layer.send)(channel, {"type": "x", "n": round_no})
            normal = async_to_sync(receive_within)(layer, "loops.normal")
            specific = async_to_sync(receive_within)(layer, channel)
            assert normal["n"] == round_no
            assert specific["n"] == round_no
            async_to_sync(layer.group_add)("loops-group", channel)
            async_to_sync(layer.group_send)("loops-group", {"type": "g", "n": round_no})
            assert async_to_sync(receive_within)(layer, channel)["n"] == round_no
    finally:
        async_to_sync(layer.close_pools)()


def _run_in_thread(coroutine_fn: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run ``coroutine_fn()`` with ``asyncio.run`` in a new thread and return its result."""
    outcome: dict[str, Any] = {}

    def target() -> None:
        try:
            outcome["result"] = asyncio.run(coroutine_fn())
        except BaseException as exc:  # noqa: BLE001 - handed back to the test thread
            outcome["error"] = exc

    thread = threading.Thread(target=target)
    thread.start()
    thread.join(30)
    assert not thread.is_alive(), "the event loop thread hung"
    if "error" in outcome:
        raise outcome["error"]
    return outcome["result"]


def test_one_layer_serves_event_loops_of_several_threads_in_turn(
    redis_url: str, prefix: str
) -> None:
    layer = layer_class()(hosts=[redis_url], prefix=prefix)
    try:
        channel: str = _run_in_thread(layer.new_channel)

        async def first_loop() -> int:
            for message in numbered(3):
                await layer.send(channel, message)
                await layer.send("threads.normal", message)
            # Receive one of each; the rest may already sit in local buffers.
            await receive_within(layer, "threads.normal")
            return int((await receive_within(layer, channel))["n"])

        async def second_loop() -> list[int]:
            got = [(await receive_within(layer, channel))["n"] for _ in range(2)]
            got += [(await receive_within(layer, "threads.normal"))["n"] for _ in range(2)]
            return got

        assert _run_in_thread(first_loop) == 0
        # The first loop is closed now; what it had read ahead must not be lost.
        assert _run_in_thread(second_loop) == [1, 2, 1, 2]
    finally:
        _run_in_thread(layer.close_pools)


def test_a_normal_channel_message_returned_in_an_ended_loop_is_not_returned_again(
    redis_url: str, prefix: str
) -> None:
    """An entry is acknowledged with the next read of its channel; a loop that
    ends first acknowledges it on its way out, so a later loop resuming an
    interrupted read (under the same consumer name) does not return it again."""
    layer = layer_class()(hosts=[redis_url], prefix=prefix)
    channel = "ended.normal"
    try:

        async def first_loop() -> int:
            await layer.send(channel, {"type": "x", "n": 1})
            return int((await receive_within(layer, channel))["n"])

        async def second_loop() -> list[int]:
            assert await receives_nothing(layer, channel, 0.2)  # an interrupted read
            await layer.send(channel, {"type": "x", "n": 2})
            got = [(await receive_within(layer, channel))["n"]]
            assert await receives_nothing(layer, channel, 0.2)
            return got

        assert _run_in_thread(first_loop) == 1
        assert _run_in_thread(second_loop) == [2]
    finally:
        _run_in_thread(layer.close_pools)


def test_loops_running_at_once_never_return_each_others_messages(
    redis_url: str, prefix: str
) -> None:
    layer = layer_class()(hosts=[redis_url], prefix=prefix)
    channel = "together.normal"
    holding, release = threading.Event(), threading.Event()
    outcome: dict[str, Any] = {}

    async def holding_loop() -> None:
        # Returns a message, then keeps its loop (and the acknowledgement) open.
        await layer.send(channel, {"type": "x", "n": 1})
        outcome["held"] = (await receive_within(layer, channel))["n"]
        holding.set()
        await asyncio.to_thread(release.wait, 30)

    async def other_loop() -> list[int]:
        assert await receives_nothing(layer, channel, 0.2)  # an interrupted read
        await layer.send(channel, {"type": "x", "n": 2})
        got = [(await receive_within(layer, channel))["n"]]
        assert await receives_nothing(layer, channel, 0.2)
        return got

    holder = threading.Thread(target=asyncio.run, args=(holding_loop(),))
    holder.start()
    try:
        assert holding.wait(30)
        assert _run_in_thread(other_loop) == [2]
        assert outcome["held"] == 1
    finally:
        release.set()
        holder.join(30)
        _run_in_thread(layer.close_pools)


def test_an_entry_an_interrupted_read_left_pending_goes_to_the_next_loop(
    redis_url: str, prefix: str
) -> None:
    """Redis handed an entry to a read whose reply never arrived (cancelled at
    that instant), and the loop ended: the next loop takes the consumer name
    over and resumes the read."""
    layer = layer_class()(hosts=[redis_url], prefix=prefix)
    channel = "handover.normal"
    try:

        async def interrupted_loop() -> None:
            assert await receives_nothing(layer, channel, 0.2)  # a read cancelled...
            await layer.send(channel, {"type": "x", "n": 1})
            state = layer._state()
            # ...just as Redis handed it this entry
            taken: Any = await state.shards.client(channel).xreadgroup(
                layer.config.team,
                state.channels.consumer,
                {layer.keys.channel(channel): ">"},
                count=1,
            )
            assert len(taken[0][1]) == 1

        async def next_loop() -> int:
            return int((await receive_within(layer, channel))["n"])

        _run_in_thread(interrupted_loop)
        assert _run_in_thread(next_loop) == 1
    finally:
        _run_in_thread(layer.close_pools)


def test_an_inbox_entry_handed_to_a_read_cancelled_with_its_loop_reaches_the_next_loop(
    redis_url: str, prefix: str
) -> None:
    layer = layer_class()(hosts=[redis_url], prefix=prefix)
    try:
        channel: str = _run_in_thread(layer.new_channel)

        async def first_loop() -> None:
            await layer.send(channel, {"type": "x", "n": 0})
            assert (await receive_within(layer, channel))["n"] == 0
            # A receive that times out leaves the reader's read in flight; the
            # loop's end cancels it.
            assert await receives_nothing(layer, channel, 0.2)

        async def read_lost() -> None:
            # Redis hands the next entry to that read, whose reply never arrives.
            await layer.send(channel, {"type": "x", "n": 1})
            taken: Any = (
                await layer._state()
                .shards.client(layer.client_id)
                .xreadgroup(
                    READER_GROUP,
                    READER_CONSUMER,
                    {layer.keys.inbox(layer.client_id): ">"},
                    count=1,
                    noack=True,
                )
            )
            assert len(taken[0][1]) == 1

        async def next_loop() -> int:
            return int((await receive_within(layer, channel))["n"])

        _run_in_thread(first_loop)
        _run_in_thread(read_lost)
        assert _run_in_thread(next_loop) == 1
    finally:
        _run_in_thread(layer.close_pools)


async def _until(condition: Callable[[], bool], timeout_s: float = 3.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout_s
    while not condition():
        assert asyncio.get_running_loop().time() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


async def test_the_reader_of_a_receive_loop_reads_ahead_between_receives_then_stops(
    make_layer: LayerFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Once its loop has waited in receive() twice, the inbox reader keeps a
    read waiting in Redis between receives: a message sent while no receive
    waits reaches the local buffer. It stops READER_LINGER_S after the last
    receive, and a loop that waited once does not keep it."""
    monkeypatch.setattr(streams_layer.layer, "READER_LINGER_S", 0.3)
    once, loop_layer = make_layer(block_ms=100), make_layer(block_ms=100)
    for layer, waits in ((once, 1), (loop_layer, 2)):
        channel = await layer.new_channel()
        for n in range(waits):
            await layer.send(channel, {"type": "x", "n": n})
            assert (await receive_within(layer, channel))["n"] == n
        await layer.send(channel, {"type": "x", "n": waits})
        if waits == 1:
            await asyncio.sleep(0.3)
            assert layer.mailboxes.queued(channel) == 0  # left in Redis
        else:
            await _until(lambda: layer.mailboxes.queued(channel) == 1)  # noqa: B023
            reader = layer._state().reader._task
            await _until(reader.done, 0.3 + 0.1 + 2.0)
        assert (await receive_within(layer, channel))["n"] == waits


async def test_no_read_ahead_while_another_loop_of_the_instance_reads(
    make_layer: LayerFactory,
) -> None:
    """A loop's reader reads ahead only while it is the instance's only
    reader: a read cancelled as its loop ends would otherwise be given up."""
    layer = make_layer(block_ms=100)
    mine, theirs = await layer.new_channel(), await layer.new_channel()
    for n in range(2):
        await layer.send(mine, {"type": "x", "n": n})
        assert (await receive_within(layer, mine))["n"] == n
    reader = layer._state().reader._task
    assert reader is not None
    assert not reader.done()  # reading ahead
    other_reading = threading.Event()

    async def other_loop() -> int:
        waiting = asyncio.ensure_future(layer.receive(theirs))
        await asyncio.sleep(0.05)
        other_reading.set()
        return int((await asyncio.wait_for(waiting, 10))["n"])

    other = asyncio.ensure_future(asyncio.to_thread(_run_in_thread, other_loop))
    assert await asyncio.to_thread(other_reading.wait, 5)
    # block_ms is 0.1 s; reading ahead alone would go on for 1 s.
    await asyncio.sleep(0.4)
    assert reader.done()
    await layer.send(theirs, {"type": "x", "n": 7})
    assert await other == 7


def test_an_event_loop_the_layer_used_is_freed_once_closed(redis_url: str, prefix: str) -> None:
    """Nothing of the layer keeps a closed loop (and its connections) alive."""
    layer = layer_class()(hosts=[redis_url], prefix=prefix)
    loop = asyncio.new_event_loop()
    loop.run_until_complete(layer.send("freed", {"type": "x"}))
    loop.close()
    closed = weakref.ref(loop)
    del loop
    gc.collect()
    assert closed() is None


async def test_layer_built_outside_a_loop_works_in_this_loop(
    make_layer: LayerFactory,
) -> None:
    layer = await asyncio.to_thread(make_layer)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "x"})
    assert await receive_within(layer, channel) == {"type": "x"}


# -- cancellation -------------------------------------------------------------------------


async def _receive_with_cancellations(
    layer: Any, channel: str, count: int, rng: random.Random
) -> list[int]:
    """Receive until ``count`` messages arrived, cancelling most attempts midway."""
    got: list[int] = []
    deadline = asyncio.get_running_loop().time() + 20
    while len(got) < count and asyncio.get_running_loop().time() < deadline:
        task = asyncio.ensure_future(layer.receive(channel))
        # Zero lets the task start and stop at its first await; the others
        # cancel it while it blocks in Redis or waits on a buffer.
        await asyncio.sleep(rng.choice([0, 0, 0.001, 0.003, 0.01]))
        if task.done():
            got.append(int(task.result()["n"]))
            continue
        task.cancel()
        try:
            message = await task
        except asyncio.CancelledError:
            continue
        # Cancelled too late: the receive completed and its result counts.
        got.append(int(message["n"]))
    return got


@pytest.mark.parametrize("kind", ["normal", "specific"])
async def test_cancelled_receives_lose_and_duplicate_nothing(
    make_layer: LayerFactory, kind: str
) -> None:
    count = 300
    owner, sender = make_layer(capacity=count + 10), make_layer(capacity=count + 10)
    channel = await owner.new_channel() if kind == "specific" else "cancel.normal"
    rng = random.Random(1234)

    async def send_all() -> None:
        for message in numbered(count):
            await sender.send(channel, message)
            if message["n"] % 10 == 0:
                await asyncio.sleep(0.002)

    receiving = asyncio.ensure_future(_receive_with_cancellations(owner, channel, count, rng))
    await send_all()
    got = await receiving
    assert len(got) == len(set(got)), "a message was delivered twice"
    missing = sorted(set(range(count)) - set(got))
    assert missing == [], f"{len(missing)} messages lost, first {missing[:10]}"
    assert got == list(range(count)), "messages arrived out of order"
    assert await receives_nothing(owner, channel, 0.3)


async def test_a_receive_cancelled_right_after_its_hand_off_loses_nothing(
    make_layer: LayerFactory,
) -> None:
    """The message handed to a waiting receive() that is cancelled before it
    runs goes back first in line (the random cancellations above rarely hit
    this window)."""
    layer = make_layer()
    channel = await layer.new_channel()
    waiting = asyncio.ensure_future(layer.receive(channel))
    await asyncio.sleep(0.05)  # waits on its empty buffer
    layer.mailboxes.put(channel, {"type": "x", "n": 1}, time.time() + 60)  # as the reader does
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    assert await receive_within(layer, channel) == {"type": "x", "n": 1}


async def test_receiving_from_many_normal_channels_keeps_no_lock_per_name(
    make_layer: LayerFactory,
) -> None:
    layer = make_layer()
    for n in range(50):
        await layer.send(f"names.{n}", {"type": "x", "n": n})
        assert (await receive_within(layer, f"names.{n}"))["n"] == n
    waiting = [asyncio.ensure_future(layer.receive("names.shared")) for _ in range(2)]
    await asyncio.sleep(0.05)
    receiver = layer._state().channels
    assert set(receiver._locks) == {"names.shared"}
    waiting[0].cancel()
    await layer.send("names.shared", {"type": "x", "n": "shared"})
    assert (await asyncio.wait_for(waiting[1], 5))["n"] == "shared"
    assert receiver._locks == {}


async def test_wait_for_timeouts_on_receive_lose_nothing(make_layer: LayerFactory) -> None:
    layer = make_layer()
    channel = await layer.new_channel()
    for _ in range(20):
        assert await receives_nothing(layer, channel, 0.01)
    await layer.send(channel, {"type": "x", "n": 1})
    await layer.send("timeouts.normal", {"type": "x", "n": 2})
    assert (await receive_within(layer, channel))["n"] == 1
    assert (await receive_within(layer, "timeouts.normal"))["n"] == 2


# -- long idle ------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["normal", "specific"])
async def test_receive_idle_longer_than_socket_timeout_still_gets_next_message(
    make_layer: LayerFactory, kind: str
) -> None:
    # redis-py's default socket timeout is 5 s; an idle blocking read must not trip it.
    owner, sender = make_layer(), make_layer()
    channel = await owner.new_channel() if kind == "specific" else "idle.normal"
    waiting = asyncio.ensure_future(owner.receive(channel))
    await asyncio.sleep(7)
    assert not waiting.done(), f"receive() ended while idle: {waiting!r}"
    await sender.send(channel, {"type": "x", "n": "after idle"})
    assert (await asyncio.wait_for(waiting, 3))["n"] == "after idle"


async def test_blocking_reads_longer_than_the_socket_timeout_are_not_timeouts(
    make_layer: LayerFactory, redis_url: str, caplog: pytest.LogCaptureFixture
) -> None:
    """block_ms 1000 with socket_timeout 0.3: idle reads end by the server's
    block, not by a client timeout and a reconnect."""
    caplog.set_level(logging.WARNING, logger="streams_layer")
    hosts = [{"address": redis_url, "socket_timeout": 0.3}]
    owner, sender = make_layer(hosts=hosts, block_ms=1000), make_layer(hosts=hosts)
    channel = await owner.new_channel()
    await sender.send("timeout.team", {"type": "x", "n": 0})
    async with owner.consume("timeout.team", team="t", claim_idle_ms=5000) as team:
        async with asyncio.timeout(5):
            async for delivery in team:
                async with delivery:
                    assert delivery.message["n"] == 0
                break
        waiting = [
            asyncio.ensure_future(owner.receive(channel)),
            asyncio.ensure_future(owner.receive("timeout.normal")),
            asyncio.ensure_future(team.__anext__()),
        ]
        await asyncio.sleep(2.5)
        assert not any(w.done() for w in waiting)
        await sender.send(channel, {"type": "x", "n": 1})
        await sender.send("timeout.normal", {"type": "x", "n": 2})
        await sender.send("timeout.team", {"type": "x", "n": 3})
        got = await asyncio.wait_for(asyncio.gather(*waiting), 5)
    assert [got[0]["n"], got[1]["n"], got[2].message["n"]] == [1, 2, 3]
    await got[2].ack()
    assert [r.getMessage() for r in caplog.records] == []


# -- Redis restart ------------------------------------------------------------------------


async def _until_works(operation: Callable[[], Coroutine[Any, Any, Any]], limit_s: float) -> Any:
    """Retry ``operation`` on typed errors until it succeeds or ``limit_s`` passes."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while True:
        try:
            return await asyncio.wait_for(operation(), 3)
        except TYPED_ERRORS:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)


async def _poll(condition: Callable[[], bool], limit_s: float) -> None:
    """Return as soon as ``condition()`` holds, or after ``limit_s``."""
    for _ in range(int(limit_s / 0.05)):
        if condition():
            return
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("kind", ["normal", "specific"])
async def test_layer_reconnects_after_redis_restart_mid_traffic(
    own_redis: RedisServer, prefix: str, kind: str
) -> None:
    factory = LayerFactory([own_redis.url], prefix)
    try:
        owner, sender = factory(), factory()
        channel = await owner.new_channel() if kind == "specific" else "restart.normal"
        errors: list[BaseException] = []
        received: list[int] = []
        stop = asyncio.Event()

        async def keep_receiving() -> None:
            while not stop.is_set():
                try:
                    message = await asyncio.wait_for(owner.receive(channel), 0.5)
                except TimeoutError:
                    continue
                except TYPED_ERRORS as exc:
                    errors.append(exc)
                    await asyncio.sleep(0.05)
                    continue
                received.append(int(message["n"]))

        async def keep_sending(first: int, last: int) -> None:
            for n in range(first, last):
                try:
                    await asyncio.wait_for(sender.send(channel, {"type": "x", "n": n}), 3)
                except TYPED_ERRORS as exc:
                    errors.append(exc)
                await asyncio.sleep(0.005)

        receiver = asyncio.ensure_future(keep_receiving())
        await keep_sending(0, 50)
        sending = asyncio.ensure_future(keep_sending(50, 150))
        await asyncio.sleep(0.1)
        await asyncio.to_thread(own_redis.restart)
        await sending
        # After the restart the layer must recover by itself.
        await _until_works(lambda: sender.send(channel, {"type": "x", "n": 1000}), 10)
        await _poll(lambda: 1000 in received, 10)
        assert 1000 in received, "no message arrived after the restart"
        # And from now on, everything sent is received, in order.
        mark = len(received)
        for n in range(2000, 2050):
            await sender.send(channel, {"type": "x", "n": n})
        await _poll(lambda: len(received) >= mark + 50, 5)
        stop.set()
        await receiver
        assert received[mark:] == list(range(2000, 2050))
        assert len(received) == len(set(received)), "a message was delivered twice"
        untyped = [e for e in errors if not isinstance(e, TYPED_ERRORS)]
        assert untyped == []
    finally:
        await factory.aclose()


async def test_groups_work_again_after_redis_restart(own_redis: RedisServer, prefix: str) -> None:
    factory = LayerFactory([own_redis.url], prefix)
    try:
        layer = factory()
        channel = await layer.new_channel()
        await layer.group_add("room", channel)
        await layer.group_send("room", {"type": "x", "n": 1})
        assert (await receive_within(layer, channel))["n"] == 1
        pending = asyncio.ensure_future(layer.receive(channel))
        await asyncio.sleep(0.1)
        await asyncio.to_thread(own_redis.restart)
        # The membership died with the data set; joining again must work.
        await _until_works(lambda: layer.group_add("room", channel), 10)
        await layer.group_send("room", {"type": "x", "n": 2})
        try:
            message = await asyncio.wait_for(pending, 5)
        except TYPED_ERRORS:
            message = await receive_within(layer, channel, 5)
        assert message["n"] == 2
    finally:
        await factory.aclose()


@pytest.mark.parametrize("fault", ["restart", "client_kill"])
async def test_idle_pooled_connections_are_replaced_after_a_fault(
    own_redis: RedisServer, prefix: str, fault: str
) -> None:
    """An operation that starts after Redis is back never fails on a dead pooled connection.

    redis-py 8's default maintenance-notification mode skips the pool's check
    for connections the server closed while they sat idle; every pooled
    connection then failed one command after a restart.
    """
    factory = LayerFactory([own_redis.url], prefix)
    try:
        layer = factory()
        channel = await layer.new_channel()
        # Concurrent callers in separate tasks leave several connections in the pool.
        for _ in range(3):
            await asyncio.gather(
                *(layer.group_add(f"pool-{n}", channel) for n in range(8)),
                *(layer.send(f"pool.normal{n}", {"type": "x"}) for n in range(8)),
            )
        if fault == "restart":
            await asyncio.to_thread(own_redis.restart)
        else:
            admin = redis.asyncio.Redis.from_url(own_redis.url)
            try:
                assert int(await admin.client_kill_filter(_type="normal", skipme=True)) > 0
            finally:
                await admin.aclose()
        await asyncio.sleep(0.5)
        for _ in range(3):
            await asyncio.gather(
                *(layer.group_add(f"pool-{n}", channel) for n in range(8)),
                *(layer.send(f"pool.normal{n}", {"type": "x"}) for n in range(8)),
            )
        await layer.group_send("pool-0", {"type": "x", "n": 1})
        assert (await receive_within(layer, channel, 5))["n"] == 1
    finally:
        await factory.aclose()


async def test_operations_while_redis_is_down_raise_typed_errors(
    own_redis: RedisServer, prefix: str
) -> None:
    factory = LayerFactory([own_redis.url], prefix)
    try:
        layer = factory()
        await layer.send("down", {"type": "x"})
        assert await receive_within(layer, "down") == {"type": "x"}
        own_redis.kill()
        with pytest.raises(TYPED_ERRORS):
            await asyncio.wait_for(layer.send("down", {"type": "x"}), 30)
        with pytest.raises(TYPED_ERRORS):
            await asyncio.wait_for(layer.group_add("g", "down"), 30)
        own_redis.start()
        await _until_works(lambda: layer.send("down", {"type": "x", "n": 2}), 10)
        assert (await receive_within(layer, "down", 5))["n"] == 2
    finally:
        await factory.aclose()


async def test_close_is_safe_after_redis_died(own_redis: RedisServer, prefix: str) -> None:
    layer = layer_class()(hosts=[own_redis.url], prefix=prefix)
    channel = await layer.new_channel()
    await layer.send(channel, {"type": "x"})
    assert await receive_within(layer, channel) == {"type": "x"}
    own_redis.kill()
    await asyncio.wait_for(close_layer(layer), 10)


def test_a_loop_ending_with_a_give_back_in_flight_logs_no_warning(
    redis_url: str, prefix: str, caplog: pytest.LogCaptureFixture
) -> None:
    """asyncio.run() cancels the give-back's round trip when the program returns
    without closing the layer: that is shutdown, not a failure to report."""
    layer = layer_class()(hosts=[redis_url], prefix=prefix, capacity=4)

    async def receive_and_leave() -> None:
        channel = await layer.new_channel()
        await layer.send(channel, {"type": "x"})
        await receive_within(layer, channel)  # a quarter of capacity: given back at once
        await asyncio.sleep(0)  # the give-back starts its round trip

    caplog.set_level(logging.WARNING, logger="streams_layer")
    asyncio.run(receive_and_leave())
    assert [r.getMessage() for r in caplog.records if r.name.startswith("streams_layer")] == []
