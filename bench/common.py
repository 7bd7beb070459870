"""Job building blocks shared by the scenarios: sending with back-off, receiving n."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

from channels.exceptions import ChannelFull

from bench.layers import LayerSpec, close_layer, make_layer
from bench.messages import (
    MSG_TYPE,
    STOP_TYPE,
    WARMUP_TYPE,
    Message,
    Receiver,
    Tracker,
    bench_message,
    now,
)
from bench.pool import Control

# Time a fresh receiver gets to subscribe / create its group before it says ready.
SUBSCRIBE_GRACE_S = 0.3
# Back-off after ChannelFull, and how long a send keeps retrying before giving up.
FULL_BACKOFF_S = 0.001
FULL_GIVE_UP_S = 10.0
# How long a receiver keeps listening for late duplicates after it has everything.
LINGER_S = 0.3
INFO_TIMEOUT_S = 60.0
RESULT_GRACE_S = 60.0


@dataclass(frozen=True)
class Env:
    """What every layer job needs: the layer, the Redis, and its time bounds."""

    spec: LayerSpec
    url: str
    idle_s: float
    deadline_s: float

    def layer(self, **overrides: Any) -> Any:
        """A new instance of the layer under test."""
        return make_layer(self.spec, self.url, **overrides)


@dataclass(frozen=True)
class SendPlan:
    """``n`` messages to ``channel`` from ``tasks`` senders, then ``stops`` stop messages."""

    channel: str
    n: int
    tasks: int = 1
    stops: int = 0


@dataclass(frozen=True)
class ReceivePlan:
    """Receive ``n`` distinct messages on ``channel`` (a new channel when ``None``)."""

    n: int
    channel: str | None = None
    with_seqs: bool = False


async def send_with_backoff(layer: Any, channel: str, message: Message) -> tuple[bool, int]:
    """Send, retrying on ChannelFull; return (sent, number of ChannelFull seen)."""
    fulls = 0
    give_up = now() + FULL_GIVE_UP_S
    while True:
        try:
            await layer.send(channel, message)
        except ChannelFull:
            fulls += 1
            if now() > give_up:
                return False, fulls
            await asyncio.sleep(FULL_BACKOFF_S)
        else:
            return True, fulls


async def send_job(ctl: Control, *, env: Env, plan: SendPlan) -> dict[str, Any]:
    """Send ``plan.n`` messages from ``plan.tasks`` concurrent senders, each awaiting in turn."""
    layer = env.layer()
    channel, n, tasks = plan.channel, plan.n, plan.tasks
    counters = {"full": 0, "failed": 0}

    async def sender(sender_id: int, count: int) -> None:
        for seq in range(count):
            sent, fulls = await send_with_backoff(layer, channel, bench_message(sender_id, seq))
            counters["full"] += fulls
            counters["failed"] += not sent

    try:
        await send_with_backoff(layer, channel, {"type": WARMUP_TYPE})
        shares = [n // tasks + (1 if k < n % tasks else 0) for k in range(tasks)]
        t0 = now()
        await asyncio.gather(*(sender(k, share) for k, share in enumerate(shares)))
        t_end = now()
        for _ in range(plan.stops):
            await send_with_backoff(layer, channel, {"type": STOP_TYPE})
    finally:
        await close_layer(layer)
    return {"t0": t0, "t_end": t_end, **counters}


async def collect(
    receiver: Receiver, tracker: Tracker, *, n: int, idle_s: float, deadline: float
) -> float | None:
    """Receive until ``n`` distinct messages, a stop message, ``idle_s`` of silence or ``deadline``.

    Returns the time the n-th distinct message arrived (``None`` if it never did).
    """
    complete_t: float | None = None
    while now() < deadline:
        timeout = idle_s if complete_t is None else max(0.0, complete_t + LINGER_S - now())
        message = await receiver.next(max(0.001, min(timeout, deadline - now())))
        if message is None:
            break
        kind = message.get("type")
        if kind == STOP_TYPE:
            break
        if kind != MSG_TYPE or not tracker.add(message["s"], message["q"]):
            continue
        if complete_t is None and tracker.unique >= n:
            complete_t = now()
    return complete_t


async def recv_job(ctl: Control, *, env: Env, plan: ReceivePlan) -> dict[str, Any]:
    """Own (or join) a channel, say ready, and receive ``plan.n`` distinct messages."""
    layer = env.layer()
    channel = plan.channel
    try:
        if channel is None:
            channel = await layer.new_channel()
        receiver = Receiver(layer, channel)
        receiver.start()
        await asyncio.sleep(SUBSCRIBE_GRACE_S)
        ctl.info(channel=channel)
        tracker = Tracker()
        complete_t = await collect(
            receiver, tracker, n=plan.n, idle_s=env.idle_s, deadline=now() + env.deadline_s
        )
        await receiver.close()
    finally:
        await close_layer(layer)
    return {**tracker.summary(with_seqs=plan.with_seqs), "complete_t": complete_t}


def throughput(unique: int, t0: float, done_t: float | None) -> float | None:
    """Messages per second from the first send to ``done_t``."""
    if done_t is None or done_t <= t0 or unique == 0:
        return None
    return unique / (done_t - t0)
