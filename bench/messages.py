"""Benchmark messages, sequence tracking and non-cancelling receives.

Every measured message carries a sender id ``s`` and a sequence number ``q``
so that receivers can count lost, duplicated and out-of-order deliveries.
"""

from __future__ import annotations

import asyncio
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
    """Waits for ``layer.receive(channel)`` without cancelling it on timeout.

    Cancelling a receive has side effects in some layers (the pub/sub layer
    unsubscribes the channel), so a timed-out wait keeps the pending receive
    and the next call waits on the same one.
    """

    def __init__(self, layer: Any, channel: str) -> None:
        self.layer = layer
        self.channel = channel
        self._task: asyncio.Task[Message] | None = None

    def start(self) -> None:
        """Start the pending receive now (e.g. to subscribe before a sender starts)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self.layer.receive(self.channel))

    async def next(self, timeout_s: float) -> Message | None:
        """The next message, or ``None`` after ``timeout_s`` without one."""
        self.start()
        task = self._task
        if task is None:  # pragma: no cover - start() sets it
            return None
        done, _ = await asyncio.wait({task}, timeout=timeout_s)
        if not done:
            return None
        self._task = None
        return task.result()

    async def close(self) -> None:
        """Cancel the pending receive, if any."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
