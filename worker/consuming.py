"""The statistic worker's core: N consumers sharing one channel, counting into the DB.

:func:`consume` is the one place that reads messages from the layer; the rest
(handling, progress, shutdown) does not care how messages arrive.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import BaseChannelLayer

from worker.aggregate import record_requests
from worker.records import InvalidRecordError, parse_message

logger = logging.getLogger(__name__)

Message = dict[str, Any]
Handler = Callable[[Message], Awaitable[None]]


@dataclass
class WorkerCounters:
    """What the consumers have done so far."""

    processed: int = 0
    invalid: int = 0
    per_consumer: dict[str, int] = field(default_factory=dict)


async def consume(
    layer: BaseChannelLayer,
    channel: str,
    *,
    consumer: str,
    handle: Handler,
    stop: asyncio.Event,
) -> None:
    """Receive from ``channel`` and hand every message to ``handle`` until ``stop`` is set.

    Every ``receive()`` on a normal channel is a read in the layer's team
    (its consumer group), so concurrent consumers share the messages and
    each message reaches one of them. A message once received is always
    handled completely; ``stop`` only interrupts waiting for the next one.
    """
    stopping = asyncio.ensure_future(stop.wait())
    try:
        while not stop.is_set():
            receiving = asyncio.ensure_future(layer.receive(channel))
            await asyncio.wait({receiving, stopping}, return_when=asyncio.FIRST_COMPLETED)
            if not receiving.done():
                receiving.cancel()
                await asyncio.gather(receiving, return_exceptions=True)
                return
            await handle(receiving.result())
            logger.debug("consumer %s handled a message", consumer)
    finally:
        stopping.cancel()


def make_handler(counters: WorkerCounters, consumer: str) -> Handler:
    """A handler that counts one ``statistic`` message into the database."""
    count_in_db = sync_to_async(record_requests, thread_sensitive=True)

    async def handle(message: Message) -> None:
        try:
            record = parse_message(message)
        except InvalidRecordError as exc:
            counters.invalid += 1
            logger.warning("skipping message: %s", exc)
            return
        await count_in_db([record])
        counters.processed += 1
        counters.per_consumer[consumer] = counters.per_consumer.get(consumer, 0) + 1

    return handle


@dataclass(frozen=True)
class TeamSpec:
    """Which channel a team consumes, under which name, with how many consumers."""

    channel: str
    team: str
    consumers: int

    def consumer_names(self) -> list[str]:
        """``<team>-1`` ... ``<team>-<consumers>``."""
        return [f"{self.team}-{number}" for number in range(1, self.consumers + 1)]


async def run_team(
    layer: BaseChannelLayer,
    spec: TeamSpec,
    *,
    stop: asyncio.Event,
    counters: WorkerCounters,
) -> None:
    """Run the consumers of ``spec`` until ``stop`` is set; each handles whole messages."""
    tasks = [
        asyncio.create_task(
            consume(
                layer, spec.channel, consumer=name, handle=make_handler(counters, name), stop=stop
            ),
            name=name,
        )
        for name in spec.consumer_names()
    ]
    try:
        await asyncio.gather(*tasks)
    finally:
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
