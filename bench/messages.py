"""Benchmark messages, sequence tracking and non-cancelling receives.

Every measured message carries a sender id ``s`` and a sequence number ``q``
so that receivers can count lost, duplicated and out-of-order deliveries.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import math
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

Message = dict[str, Any]

MSG_TYPE = "bench.msg"
WARMUP_TYPE = "bench.warmup"
STOP_TYPE = "bench.stop"
# Padding that brings a msgpack-serialized message to about 100 bytes.
PAD = "x" * 58


def now() -> float:
    """CLOCK_MONOTONIC seconds: one clock for every process of the machine."""
    return time.monotonic()


def bench_message(sender: int, seq: int, **extra: Any) -> Message:
    """A measured message of about 100 bytes."""
    message: Message = {"type": MSG_TYPE, "s": sender, "q": seq, "t": now(), "p": PAD}
    message.update(extra)
    return message


def percentile(values: list[float], fraction: float) -> float:
    """Nearest-rank percentile of ``values`` (``fraction`` in 0..1)."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(fraction * len(ordered)))
    return ordered[rank - 1]


@dataclass
class Tracker:
    """Counts deliveries per sender: duplicates and out-of-order arrivals."""

    received: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    first_t: float | None = None
    last_t: float | None = None
    last_new_t: float | None = None
    seen: dict[int, set[int]] = field(default_factory=dict)
    highest: dict[int, int] = field(default_factory=dict)
    unique: int = 0

    def add(self, sender: int, seq: int) -> bool:
        """Record one delivery; return whether it was new."""
        t = now()
        if self.first_t is None:
            self.first_t = t
        self.last_t = t
        self.received += 1
        seen = self.seen.setdefault(sender, set())
        if seq in seen:
            self.duplicated += 1
            return False
        seen.add(seq)
        self.unique += 1
        self.last_new_t = t
        if seq < self.highest.get(sender, -1):
            self.out_of_order += 1
        else:
            self.highest[sender] = seq
        return True

    def summary(self, *, with_seqs: bool = False) -> dict[str, Any]:
        """A picklable summary for the parent process."""
        result: dict[str, Any] = {
            "received": self.received,
            "unique": self.unique,
            "duplicated": self.duplicated,
            "out_of_order": self.out_of_order,
            "first_t": self.first_t,
            "last_t": self.last_t,
            "last_new_t": self.last_new_t,
        }
        if with_seqs:
            result["seqs"] = {sender: sorted(seqs) for sender, seqs in self.seen.items()}
        return result


def merge_unique(summaries: Iterable[dict[str, Any]]) -> int:
    """Distinct (sender, seq) pairs over several receivers' ``seqs``."""
    union: set[tuple[int, int]] = set()
    for summary in summaries:
        for sender, seqs in summary.get("seqs", {}).items():
            union.update((sender, seq) for seq in seqs)
    return len(union)


class Receiver:
    """One task calling ``layer.receive(channel)`` in a loop; :meth:`next` takes from its buffer.

    A timed-out :meth:`next` cancels nothing (cancelling a receive has side
    effects in some layers: the pub/sub layer unsubscribes the channel). A
    message already buffered is returned without awaiting anything: the
    harness's own cost per message stays below the layers' (a task and an
    ``asyncio.wait`` per message cost the receiving process about as much as
    the fastest layer's own receive).
    """

    def __init__(self, layer: Any, channel: str) -> None:
        self.layer = layer
        self.channel = channel
        self._task: asyncio.Task[None] | None = None
        self._buffer: collections.deque[Message] = collections.deque()
        self._waiter: asyncio.Future[None] | None = None
        self._error: BaseException | None = None

    def start(self) -> None:
        """Start receiving now (e.g. to subscribe before a sender starts)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._loop())

    async def _loop(self) -> None:
        try:
            while True:
                self._buffer.append(await self.layer.receive(self.channel))
                self._wake()
        except Exception as exc:  # noqa: BLE001 - any layer error: next() raises it
            self._error = exc
            self._wake()

    def _wake(self) -> None:
        waiter, self._waiter = self._waiter, None
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    async def next(self, timeout_s: float) -> Message | None:
        """The next message, or ``None`` after ``timeout_s`` without one."""
        self.start()
        if not self._buffer and self._error is None:
            loop = asyncio.get_running_loop()
            waiter = self._waiter = loop.create_future()
            timer = loop.call_later(timeout_s, self._wake)
            await waiter
            timer.cancel()
        if self._buffer:
            return self._buffer.popleft()
        if self._error is not None:
            raise self._error
        return None

    async def close(self) -> None:
        """Stop receiving (cancels the pending receive, if any)."""
        task, self._task = self._task, None
        await _cancel(task)


class InlineReceiver:
    """``layer.receive(channel)`` awaited in the caller's own task, as a raw
    ``XREAD`` loop reads: no task hop between the layer and the caller.

    For round-trip latency (:mod:`bench.latency`), where the raw ceiling reads
    inline too; :class:`Receiver`'s task adds one hop per message to every
    layer alike. Only the first receive runs in a task, started by
    :meth:`start`, so that a layer that subscribes on receive (the pub/sub
    one) is subscribed before a peer sends. A :meth:`next` that times out
    cancels its receive: use it where a timeout means the run is over.
    """

    def __init__(self, layer: Any, channel: str) -> None:
        self.layer = layer
        self.channel = channel
        self._first: asyncio.Future[Message] | None = None

    def start(self) -> None:
        """Start the first receive now (e.g. to subscribe before a sender starts)."""
        if self._first is None:
            self._first = asyncio.ensure_future(self.layer.receive(self.channel))

    async def next(self, timeout_s: float) -> Message | None:
        """The next message, or ``None`` after ``timeout_s`` without one."""
        try:
            async with asyncio.timeout(timeout_s):
                first, self._first = self._first, None
                if first is not None:
                    return await first
                message: Message = await self.layer.receive(self.channel)
                return message
        except TimeoutError:
            return None

    async def close(self) -> None:
        """Cancel a first receive that never completed."""
        first, self._first = self._first, None
        await _cancel(first)


async def _cancel(receiving: asyncio.Future[Any] | None) -> None:
    """Cancel a receiving task (if any) and wait for it, whatever it raises."""
    if receiving is not None:
        receiving.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await receiving
