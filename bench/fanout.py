"""Scenario 4: group fan-out to M members spread over 2 processes.

``fanout-M{M}``: one ``group_send`` at a time; the time from the call to
the moment the last of the M members has the message (median over the
sends). The sender waits for both member processes to report the message
complete (through a plain Redis list, not through the layer) before the
next send.

``burst-M100``: group sends back to back while the members keep receiving:
deliveries/s and the share of the M x sends deliveries that arrived.
"""

from __future__ import annotations

import asyncio
import statistics
from typing import Any

import redis.asyncio

from bench.common import INFO_TIMEOUT_S, RESULT_GRACE_S, SUBSCRIBE_GRACE_S
from bench.context import Ctx, Measurement
from bench.layers import LayerSpec, close_layer, make_layer
from bench.messages import MSG_TYPE, Receiver, Tracker, bench_message, now
from bench.pool import Control

GROUP = "bench-fanout"
ACK_KEY = "bench:ack"
PROCESSES = 2
MS = 1000.0


async def member_job(
    ctl: Control, *, spec: LayerSpec, url: str, members: int, sends: int, idle_s: float,
    deadline_s: float, ack: bool,
) -> dict[str, Any]:
    """``members`` channels in one group; report each message once all of them have it."""
    layer = make_layer(spec, url)
    acks = redis.asyncio.Redis.from_url(url) if ack else None
    counts: dict[int, int] = {}
    last: dict[int, float] = {}
    trackers: list[Tracker] = []
    deadline = now() + deadline_s

    async def member(channel: str, receiver: Receiver) -> None:
        tracker = Tracker()
        trackers.append(tracker)
        while tracker.unique < sends and now() < deadline:
            message = await receiver.next(min(idle_s, max(0.001, deadline - now())))
            if message is None:
                break
            if message.get("type") != MSG_TYPE or not tracker.add(message["s"], message["q"]):
                continue
            seq = message["q"]
            counts[seq] = counts.get(seq, 0) + 1
            last[seq] = now()
            if counts[seq] == members and acks is not None:
                await acks.rpush(ACK_KEY, seq)
        await receiver.close()

    try:
        channels = [await layer.new_channel() for _ in range(members)]
        for channel in channels:
            await layer.group_add(GROUP, channel)
        receivers = [Receiver(layer, channel) for channel in channels]
        for receiver in receivers:
            receiver.start()
        await asyncio.sleep(SUBSCRIBE_GRACE_S)
        ctl.info(ready=True)
        await asyncio.gather(*(member(c, r) for c, r in zip(channels, receivers, strict=True)))
    finally:
        await close_layer(layer)
        if acks is not None:
            await acks.aclose()
    return {
        "counts": counts,
        "last": last,
        "unique": sum(t.unique for t in trackers),
        "duplicated": sum(t.duplicated for t in trackers),
        "out_of_order": sum(t.out_of_order for t in trackers),
        "last_new_t": max((t.last_new_t for t in trackers if t.last_new_t is not None), default=None),
    }


async def sender_job(
    ctl: Control, *, spec: LayerSpec, url: str, sends: int, wait_acks: bool, ack_timeout_s: float
) -> dict[str, Any]:
    """``sends`` group sends; with ``wait_acks`` each waits until every member process reports it."""
    layer = make_layer(spec, url)
    acks = redis.asyncio.Redis.from_url(url)
    started: list[float] = []
    timeouts = 0
    try:
        await layer.group_send(GROUP, {"type": "bench.warmup"})
        for seq in range(sends):
            started.append(now())
            await layer.group_send(GROUP, bench_message(0, seq))
            if wait_acks and not await _wait_acks(acks, seq, ack_timeout_s):
                timeouts += 1
        t_end = now()
    finally:
        await close_layer(layer)
        await acks.aclose()
    return {"started": started, "t_end": t_end, "ack_timeouts": timeouts}


async def _wait_acks(acks: redis.asyncio.Redis, seq: int, timeout_s: float) -> bool:
    deadline = now() + timeout_s
    seen = 0
    while seen < PROCESSES:
        left = deadline - now()
        if left <= 0:
            return False
        reply = await acks.blpop([ACK_KEY], timeout=left)
        if reply is None:
            return False
        if int(reply[1]) == seq:  # a late ack of an earlier message is dropped
            seen += 1
    return True


def _start_members(ctx: Ctx, spec: LayerSpec, members: int, sends: int, *, ack: bool) -> list[Any]:
    jobs = [
        ctx.pool.start(
            member_job, spec=spec, url=ctx.url, members=count, sends=sends, idle_s=ctx.sizes.idle_s,
            deadline_s=120.0, ack=ack,
        )
        for count in _shares(members)
    ]
    for job in jobs:
        job.info(INFO_TIMEOUT_S)
    return jobs


def latency(ctx: Ctx, spec: LayerSpec, members: int) -> Measurement:
    """Median time from ``group_send`` to the last of ``members`` members."""
    sends = ctx.sizes.fanout_sends
    jobs = _start_members(ctx, spec, members, sends, ack=True)
    sender = ctx.pool.start(
        sender_job, spec=spec, url=ctx.url, sends=sends, wait_acks=True, ack_timeout_s=ctx.sizes.idle_s / 2
    )
    sent = sender.result(sends * ctx.sizes.idle_s + RESULT_GRACE_S)
    got = [job.result(120.0 + RESULT_GRACE_S) for job in jobs]
    latencies = []
    for seq, started in enumerate(sent["started"]):
        if all(g["counts"].get(seq, 0) == m for g, m in zip(got, _shares(members), strict=True)):
            latencies.append((max(g["last"][seq] for g in got) - started) * MS)
    unique = sum(g["unique"] for g in got)
    per_op, calls = ctx.per_op(sends)
    return ctx.measurement(
        f"fanout-M{members}", "last-member latency", "ms", "lower", spec,
        statistics.median(latencies) if latencies else None,
        lost=sends * members - unique, duplicated=sum(g["duplicated"] for g in got),
        out_of_order=sum(g["out_of_order"] for g in got), expected=sends * members, commands_per_op=per_op,
        extra={"complete_sends": len(latencies), "ack_timeouts": sent["ack_timeouts"], "commands": calls},
    )


def burst(ctx: Ctx, spec: LayerSpec) -> list[Measurement]:
    """Back-to-back group sends to M members that keep receiving."""
    members, sends = ctx.sizes.burst_members, ctx.sizes.burst_sends
    jobs = _start_members(ctx, spec, members, sends, ack=False)
    sender = ctx.pool.start(sender_job, spec=spec, url=ctx.url, sends=sends, wait_acks=False, ack_timeout_s=0.0)
    sent = sender.result(120.0 + RESULT_GRACE_S)
    got = [job.result(120.0 + RESULT_GRACE_S) for job in jobs]
    unique = sum(g["unique"] for g in got)
    ends = [g["last_new_t"] for g in got if g["last_new_t"] is not None]
    expected = sends * members
    rate = unique / (max(ends) - sent["started"][0]) if ends and unique else None
    per_op, calls = ctx.per_op(sends)
    common: dict[str, Any] = {
        "lost": expected - unique, "duplicated": sum(g["duplicated"] for g in got),
        "out_of_order": sum(g["out_of_order"] for g in got), "expected": expected,
    }
    scenario = f"burst-M{members}"
    return [
        ctx.measurement(scenario, "deliveries", "deliveries/s", "higher", spec, rate, commands_per_op=per_op,
                        extra={"commands": calls}, **common),
        ctx.measurement(scenario, "share delivered", "%", "higher", spec, 100.0 * unique / expected, **common),
    ]


def _shares(members: int) -> list[int]:
    return [members // PROCESSES + (1 if k < members % PROCESSES else 0) for k in range(PROCESSES)]


def run(ctx: Ctx, spec: LayerSpec) -> list[Measurement]:
    """Scenarios ``fanout-M*`` and ``burst-M*`` (raw has none)."""
    if spec.is_raw:
        return []
    results = []
    for members in ctx.sizes.fanout_members:
        ctx.flush()
        results.append(latency(ctx, spec, members))
    ctx.flush()
    results.extend(burst(ctx, spec))
    return results
