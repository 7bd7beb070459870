"""Local buffers of process-specific channels, shared by every event loop.

The inbox reader puts messages here; ``receive()`` takes them. A message
carries its expiry time, so one that waited too long is dropped rather than
delivered, and a channel nobody reads empties itself within ``expiry``.
Waiting is cancel-safe: a cancelled waiter takes nothing out of the buffer.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, deque
from dataclasses import dataclass, field

from .serializers import Message


@dataclass
class _Box:
    items: deque[tuple[float, Message]] = field(default_factory=deque)
    waiters: list[asyncio.Future[None]] = field(default_factory=list)


class Mailboxes:
    """Per-channel FIFO buffers with waiters on any event loop."""

    def __init__(self) -> None:
        self._boxes: dict[str, _Box] = {}

    def __len__(self) -> int:
        return sum(len(box.items) for box in self._boxes.values())

    def queued(self, channel: str) -> int:
        """Messages buffered for ``channel``."""
        box = self._boxes.get(channel)
        return len(box.items) if box is not None else 0

    def put(self, channel: str, message: Message, expires_at: float) -> None:
        """Queue ``message`` (wall-clock ``expires_at``) and wake the channel's waiters."""
        box = self._boxes.setdefault(channel, _Box())
        box.items.append((expires_at, message))
        for waiter in box.waiters:
            _wake(waiter)
        box.waiters.clear()

    def take(self, channel: str, dropped: Counter[str]) -> Message | None:
        """The oldest fresh message of ``channel``, or None.

        Expired messages found on the way are counted in ``dropped``.
        """
        box = self._boxes.get(channel)
        if box is None:
            return None
        now = time.time()
        while box.items:
            expires_at, message = box.items.popleft()
            if expires_at > now:
                self._forget_if_idle(channel, box)
                return message
            dropped[channel] += 1
        self._forget_if_idle(channel, box)
        return None

    async def wait(self, channel: str) -> None:
        """Return when a message may have arrived for ``channel``."""
        box = self._boxes.setdefault(channel, _Box())
        if box.items:
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        box.waiters.append(waiter)
        try:
            await waiter
        finally:
            if waiter in box.waiters:
                box.waiters.remove(waiter)
            self._forget_if_idle(channel, box)

    def wake_all(self) -> None:
        """Wake every waiter (used when the reader stops or fails)."""
        for box in self._boxes.values():
            for waiter in box.waiters:
                _wake(waiter)
            box.waiters.clear()

    def sweep(self, dropped: Counter[str]) -> None:
        """Drop expired messages of every channel, counting them in ``dropped``."""
        now = time.time()
        for channel, box in list(self._boxes.items()):
            while box.items and box.items[0][0] <= now:
                box.items.popleft()
                dropped[channel] += 1
            self._forget_if_idle(channel, box)

    def clear(self) -> None:
        """Drop every buffered message (``flush``); waiters keep waiting."""
        for box in self._boxes.values():
            box.items.clear()

    def _forget_if_idle(self, channel: str, box: _Box) -> None:
        if not box.items and not box.waiters and self._boxes.get(channel) is box:
            del self._boxes[channel]


def _wake(waiter: asyncio.Future[None]) -> None:
    loop = waiter.get_loop()
    if loop.is_closed():
        return
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        if not waiter.done():
            waiter.set_result(None)
    else:
        loop.call_soon_threadsafe(_set_if_pending, waiter)


def _set_if_pending(waiter: asyncio.Future[None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
