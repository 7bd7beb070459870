"""The statistic worker's core: N consumers sharing one channel, counting into the DB.

:func:`consume` is the one place that reads messages from the layer; the rest
(handling, progress, shutdown) does not care how messages arrive.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from asgiref.sync import sync_to_async
from channels.layers import BaseChannelLayer
from django.db import DatabaseError
from django.utils import timezone

from streams_layer.team import default_consumer_name
from worker.aggregate import count_message, forget_counted
from worker.records import InvalidRecordError, parse_message

logger = logging.getLogger(__name__)

# How often the worker deletes the record of messages counted longer ago than
# the channel's expiry (their entries are gone from the stream).
FORGET_INTERVAL_S = 600.0
# Kept this much longer than the expiry: a pending entry is trimmed a moment
# after it expires, not at once.
FORGET_MARGIN_S = 300.0

Message = dict[str, Any]
# handle(message, entry_id): the message and its stream entry ID in the channel.
Handler = Callable[[Message, str], Awaitable[None]]


@dataclass
class WorkerCounters:
    """What the consumers have done so far."""

    processed: int = 0
    invalid: int = 0
    # Messages handled again after a worker died between counting and
    # acknowledging them: found counted, not counted twice.
    repeated: int = 0
    per_consumer: dict[str, int] = field(default_factory=dict)


async def consume(  # noqa: PLR0913 - a team member's settings
    layer: BaseChannelLayer,
    channel: str,
    *,
    team: str,
    consumer: str,
    handle: Handler,
    stop: asyncio.Event,
) -> None:
    """Hand every message of ``channel`` to ``handle`` as a member of ``team`` until ``stop``.

    Uses streams_layer's team API: a message is acknowledged only after
    ``handle`` returns, so one that a killed worker had read is handled by a
    teammate; one whose handler raises is retried, and moves to the dead
    letters after ``max_deliveries``. ``stop`` lets the message in hand (and
    the rest of its batch) finish, then leaves the team.
    """
    member = f"{default_consumer_name()}-{consumer}"  # unique across processes
    async with layer.consume(channel, team=team, consumer=member) as members:
        stopper = asyncio.ensure_future(stop.wait())
        stopper.add_done_callback(lambda _: members.stop())
        try:
            async for delivery in members:
                async with delivery:  # acknowledges on return, gives back on an error
                    await handle(delivery.message, delivery.id)
        finally:
            stopper.cancel()


def make_handler(counters: WorkerCounters, consumer: str, channel: str) -> Handler:
    """A handler that counts one ``statistic`` message of ``channel`` into the
    database, once however often it is handled (see :func:`count_message`)."""
    count_in_db = sync_to_async(count_message, thread_sensitive=True)

    async def handle(message: Message, entry_id: str) -> None:
        try:
            record = parse_message(message)
        except InvalidRecordError as exc:
            counters.invalid += 1
            logger.warning("skipping message: %s", exc)
            return
        if not await count_in_db(record, channel=channel, entry_id=entry_id):
            counters.repeated += 1
            logger.info("message %s of %s was counted before; not again", entry_id, channel)
            return
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
                layer,
                spec.channel,
                team=spec.team,
                consumer=name,
                handle=make_handler(counters, name, spec.channel),
                stop=stop,
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


async def forget_counted_regularly(
    *, expiry_s: float, stop: asyncio.Event, interval_s: float = FORGET_INTERVAL_S
) -> None:
    """Every ``interval_s`` until ``stop`` (and once at the start), delete the
    record of messages counted more than ``expiry_s`` + FORGET_MARGIN_S ago:
    the stream cannot hand those out again."""
    forget = sync_to_async(forget_counted, thread_sensitive=True)
    while not stop.is_set():
        before = timezone.now() - timedelta(seconds=expiry_s + FORGET_MARGIN_S)
        try:
            forgotten = await forget(before=before)
        except DatabaseError as exc:  # tried again next time; counting goes on
            logger.warning("could not forget old counted message ids: %s", exc)
        else:
            if forgotten:
                logger.info("forgot %d counted message id(s) older than %s", forgotten, before)
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
