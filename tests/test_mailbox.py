"""The local buffers of process-specific channels (no Redis involved)."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

from streams_layer.mailbox import Mailboxes

CHANNEL = "specific.abc!1"


def _fresh() -> float:
    return time.time() + 60


def _message(waiter: asyncio.Future[Any] | None) -> Any:
    """What a completed waiter was handed (None: look in the buffer)."""
    assert waiter is not None
    assert waiter.done()
    entry = waiter.result()
    return entry[1] if entry is not None else None


async def test_a_waiting_receive_is_handed_the_message() -> None:
    boxes = Mailboxes()
    waiter = boxes.waiter(CHANNEL)
    boxes.put(CHANNEL, {"n": 1}, _fresh())
    assert _message(waiter) == {"n": 1}
    assert boxes.queued(CHANNEL) == 0


async def test_a_waiter_cancelled_after_the_hand_off_puts_the_message_back_first() -> None:
    boxes = Mailboxes()
    waiter = boxes.waiter(CHANNEL)
    assert waiter is not None
    boxes.put(CHANNEL, {"n": 1}, _fresh())  # handed over; its receive is cancelled before it runs
    boxes.abandon(CHANNEL, waiter)
    boxes.put(CHANNEL, {"n": 2}, _fresh())
    assert [boxes.take(CHANNEL), boxes.take(CHANNEL), boxes.take(CHANNEL)] == [
        {"n": 1},
        {"n": 2},
        None,
    ]


async def test_the_message_put_back_wakes_another_waiter() -> None:
    boxes = Mailboxes()
    first, second = boxes.waiter(CHANNEL), boxes.waiter(CHANNEL)
    assert first is not None
    boxes.put(CHANNEL, {"n": 1}, _fresh())  # to the first waiter
    boxes.abandon(CHANNEL, first)
    assert _message(second) is None  # woken: look in the buffer
    assert boxes.take(CHANNEL) == {"n": 1}


async def test_a_waiter_cancelled_before_any_message_is_forgotten() -> None:
    boxes = Mailboxes()
    waiter = boxes.waiter(CHANNEL)
    assert waiter is not None
    boxes.abandon(CHANNEL, waiter)
    assert waiter.cancelled()
    boxes.put(CHANNEL, {"n": 1}, _fresh())  # nobody waits now: buffered
    assert boxes.take(CHANNEL) == {"n": 1}


async def test_messages_queue_in_order_when_nobody_waits() -> None:
    boxes = Mailboxes()
    for n in range(3):
        boxes.put(CHANNEL, {"n": n}, _fresh())
    assert boxes.waiter(CHANNEL) is None  # something is buffered: no wait
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
    waiter = boxes.waiter(CHANNEL)
    boxes.put(CHANNEL, {}, _fresh())
    assert _message(waiter) == {}


async def test_a_group_message_goes_to_members_with_room_only() -> None:
    boxes = Mailboxes()
    waiter = boxes.waiter("g.a!1")
    boxes.put("g.a!2", {"n": 0}, _fresh())
    boxes.put("g.a!2", {"n": 1}, _fresh())
    message = {"n": 9}
    given, full = boxes.put_group(["g.a!1", "g.a!2", "g.a!3"], message, _fresh(), lambda _: 2)
    assert (given, full) == (["g.a!1", "g.a!3"], ["g.a!2"])
    handed = _message(waiter)
    assert handed == message
    taken = boxes.take("g.a!3")
    assert taken == message
    assert taken is not handed  # every member gets its own copy
    assert [boxes.take("g.a!2"), boxes.take("g.a!2"), boxes.take("g.a!2")] == [
        {"n": 0},
        {"n": 1},
        None,
    ]


def test_a_put_from_another_thread_as_take_empties_the_buffer_is_kept() -> None:
    """Loops of several threads share one layer's buffers: take() removing the
    buffer it just emptied must not drop what put() adds in another thread
    at that moment."""
    mailboxes = Mailboxes()
    racing: list[threading.Thread] = []

    class RacingBuffers(dict[str, Any]):
        def __delitem__(self, channel: str) -> None:
            # Another thread puts just before take() removes the emptied buffer.
            if not racing:
                racing.append(
                    threading.Thread(target=mailboxes.put, args=(channel, {"n": 2}, _fresh()))
                )
                racing[0].start()
                racing[0].join(0.2)  # a put that waits for take() to finish times out here
            super().__delitem__(channel)

    mailboxes._items = RacingBuffers()
    mailboxes.put(CHANNEL, {"n": 1}, _fresh())
    assert mailboxes.take(CHANNEL) == {"n": 1}
    racing[0].join(5)
    assert mailboxes.take(CHANNEL) == {"n": 2}
