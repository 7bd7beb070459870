"""The local buffers of process-specific channels (no Redis involved)."""

from __future__ import annotations

import asyncio
import time

import pytest

from streams_layer.mailbox import Mailboxes

CHANNEL = "specific.abc!1"


def _fresh() -> float:
    return time.time() + 60


async def test_a_waiting_receive_is_handed_the_message() -> None:
    boxes = Mailboxes()
    waiting = asyncio.ensure_future(boxes.wait(CHANNEL))
    await asyncio.sleep(0)
    boxes.put(CHANNEL, {"n": 1}, _fresh())
    assert await waiting == {"n": 1}
    assert boxes.queued(CHANNEL) == 0


async def test_a_waiter_cancelled_after_the_hand_off_puts_the_message_back_first() -> None:
    boxes = Mailboxes()
    waiting = asyncio.ensure_future(boxes.wait(CHANNEL))
    await asyncio.sleep(0)
    boxes.put(CHANNEL, {"n": 1}, _fresh())  # handed over; the waiter has not run yet
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    boxes.put(CHANNEL, {"n": 2}, _fresh())
    assert [boxes.take(CHANNEL), boxes.take(CHANNEL), boxes.take(CHANNEL)] == [
        {"n": 1},
        {"n": 2},
        None,
    ]


async def test_the_message_put_back_wakes_another_waiter() -> None:
    boxes = Mailboxes()
    first = asyncio.ensure_future(boxes.wait(CHANNEL))
    await asyncio.sleep(0)
    second = asyncio.ensure_future(boxes.wait(CHANNEL))
    await asyncio.sleep(0)
    boxes.put(CHANNEL, {"n": 1}, _fresh())  # to the first waiter
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    assert await asyncio.wait_for(second, 1) is None  # woken: look in the buffer
    assert boxes.take(CHANNEL) == {"n": 1}


async def test_messages_queue_in_order_when_nobody_waits() -> None:
    boxes = Mailboxes()
    for n in range(3):
        boxes.put(CHANNEL, {"n": n}, _fresh())
    assert await boxes.wait(CHANNEL) is None  # something is buffered: no wait
    assert [boxes.take(CHANNEL) for _ in range(4)] == [{"n": 0}, {"n": 1}, {"n": 2}, None]


async def test_expired_messages_are_skipped_and_counted() -> None:
    boxes = Mailboxes()
    boxes.put(CHANNEL, {"n": 0}, time.time() - 1)
    boxes.put(CHANNEL, {"n": 1}, _fresh())
    assert boxes.take(CHANNEL) == {"n": 1}
    assert boxes.collect_expired() == {CHANNEL: 1}
    assert not boxes.expired


async def test_an_empty_message_handed_over_is_not_mistaken_for_none() -> None:
    boxes = Mailboxes()
    waiting = asyncio.ensure_future(boxes.wait(CHANNEL))
    await asyncio.sleep(0)
    boxes.put(CHANNEL, {}, _fresh())
    assert await waiting == {}


async def test_a_group_message_goes_to_members_with_room_only() -> None:
    boxes = Mailboxes()
    waiting = asyncio.ensure_future(boxes.wait("g.a!1"))
    await asyncio.sleep(0)
    boxes.put("g.a!2", {"n": 0}, _fresh())
    boxes.put("g.a!2", {"n": 1}, _fresh())
    message = {"n": 9}
    given, full = boxes.put_group(["g.a!1", "g.a!2", "g.a!3"], message, _fresh(), lambda _: 2)
    assert (given, full) == (["g.a!1", "g.a!3"], ["g.a!2"])
    handed = await waiting
    assert handed == message
    taken = boxes.take("g.a!3")
    assert taken == message
    assert taken is not handed  # every member gets its own copy
    assert [boxes.take("g.a!2"), boxes.take("g.a!2"), boxes.take("g.a!2")] == [
        {"n": 0},
        {"n": 1},
        None,
    ]
