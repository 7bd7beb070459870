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

Entry = tuple[float, Message]  # (wall-clock expiry, message)


@dataclass
class _Box:
    items: deque[Entry] = field(default_factory=deque)
    # A waiter's result is an entry handed to it directly, or None for "look again".
    waiters: deque[asyncio.Future[Entry | None]] = field(default_factory=deque)


class Mailboxes:
    """Per-channel FIFO buffers with waiters on any event loop.

    A message for a channel with an empty buffer and a waiter on the running
    loop is handed to that waiter directly: the woken ``receive()`` returns it
    without looking in the buffer again (the common case of a websocket
    consumer waiting for its next message). A waiter cancelled after the
    hand-off puts the message back at the front, so nothing is lost.
    """

    def __init__(self) -> None:
        self._boxes: dict[str, _Box] = {}
        # Expired messages dropped by take(), per channel, until collected.
        self.expired: Counter[str] = Counter()

    def __len__(self) -> int:
        return sum(len(box.items) for box in self._boxes.values())

    def queued(self, channel: str) -> int:
        """Messages buffered for ``channel``."""
        box = self._boxes.get(channel)
        return len(box.items) if box is not None else 0

    def put(self, channel: str, message: Message, expires_at: float) -> None:
        """Queue ``message`` (wall-clock ``expires_at``) and wake the channel's waiters."""
        box = self._boxes.get(channel)
        if box is None:
            box = self._boxes[channel] = _Box()
        if not box.items and box.waiters:
            loop = _running_loop()
            while box.waiters:
                waiter = box.waiters.popleft()
                if waiter.done():
                    continue
                if waiter.get_loop() is loop:
                    waiter.set_result((expires_at, message))
                    return
                box.waiters.appendleft(waiter)
                break
        box.items.append((expires_at, message))
        self._wake_waiters(box)

    def take(self, channel: str) -> Message | None:
        """The oldest fresh message of ``channel``, or None.

        Expired messages found on the way are counted in :attr:`expired`.
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
            self.expired[channel] += 1
        self._forget_if_idle(channel, box)
        return None

    def collect_expired(self) -> Counter[str]:
        """The expired-message counts gathered by :meth:`take` since the last call."""
        expired, self.expired = self.expired, Counter()
        return expired

    async def wait(self, channel: str) -> Message | None:
        """Wait until a message may have arrived for ``channel``.

        Returns the message when it was handed over directly, else None (look
        in the buffer again).
        """
        box = self._boxes.get(channel)
        if box is None:
            box = self._boxes[channel] = _Box()
        if box.items:
            return None
        waiter: asyncio.Future[Entry | None] = asyncio.get_running_loop().create_future()
        box.waiters.append(waiter)
        try:
            entry = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                handed = waiter.result()
                if handed is not None:
                    # Cancelled after the hand-off: the message goes back first in line.
                    box = self._boxes.setdefault(channel, box)
                    box.items.appendleft(handed)
                    self._wake_waiters(box)
            raise
        finally:
            if waiter in box.waiters:
                box.waiters.remove(waiter)
            self._forget_if_idle(channel, box)
        return entry[1] if entry is not None else None

    def wake_all(self) -> None:
        """Wake every waiter (used when the reader stops or fails)."""
        for box in self._boxes.values():
            self._wake_waiters(box)

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
        self.expired.clear()

    def _forget_if_idle(self, channel: str, box: _Box) -> None:
        if not box.items and not box.waiters and self._boxes.get(channel) is box:
            del self._boxes[channel]

    @staticmethod
    def _wake_waiters(box: _Box) -> None:
        for waiter in box.waiters:
            _wake(waiter)
        box.waiters.clear()


def _running_loop() -> asyncio.AbstractEventLoop | None:
    try:
        return asyncio.get_running_loop()
    except RuntimeError:
        return None


def _wake(waiter: asyncio.Future[Entry | None]) -> None:
    loop = waiter.get_loop()
    if loop.is_closed():
        return
    if _running_loop() is loop:
        if not waiter.done():
            waiter.set_result(None)
    else:
        loop.call_soon_threadsafe(_set_if_pending, waiter)


def _set_if_pending(waiter: asyncio.Future[Entry | None]) -> None:
    if not waiter.done():
        waiter.set_result(None)
