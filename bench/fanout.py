"""Scenario 4: group fan-out to M members spread over 2 processes.

``fanout-M{M}``: one ``group_send`` at a time; the time from the call to
the moment the last of the M members has the message (median over the
sends). The sender waits for both member processes to report the message
complete (through a plain Redis list, not through the layer) before the
next send.

``burst-M{M}``: group sends back to back while the members keep receiving:
deliveries/s and the share of the M x sends deliveries that arrived.
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis.asyncio

from bench.common import INFO_TIMEOUT_S, RESULT_GRACE_S, SUBSCRIBE_GRACE_S, Env
from bench.context import Ctx, Measurement, Metric
from bench.layers import LayerSpec, close_layer
from bench.messages import MSG_TYPE, WARMUP_TYPE, Tracker, bench_message, now
from bench.pool import Control, Job

GROUP = "bench-fanout"
ACK_KEY = "bench:ack"
PROCESSES = 2
MS = 1000.0
WATCH_S = 0.2
LAST_MEMBER = Metric("last-member latency", "ms", "lower")
DELIVERIES = Metric("deliveries", "deliveries/s", "higher")
SHARE = Metric("share delivered", "%", "higher")


@dataclass(frozen=True)
class MemberPlan:
    """``members`` channels in one process, each expecting ``sends`` messages."""

    members: int
    sends: int
    ack: bool


class Members:
    """Per-message delivery counts of one process's members."""

    def __init__(self, members: int, acks: redis.asyncio.Redis | None) -> None:
        self.members = members
        self.acks = acks
        self.counts: dict[int, int] = {}
        self.last: dict[int, float] = {}
        self.trackers: list[Tracker] = []
        self.last_activity = now()

    async def delivered(self, seq: int) -> None:
        """One member has ``seq``; ack it once all of them have."""
        self.counts[seq] = self.counts.get(seq, 0) + 1
        self.last[seq] = now()
        if self.counts[seq] == self.members and self.acks is not None:
            await self.acks.rpush(ACK_KEY, seq)

    async def member(self, layer: Any, channel: str, sends: int) -> None:
        """Receive one member's messages with plain ``receive()`` calls.

        No per-message timeout wrapper: with 1,000 members it would cost more
        than the layers under test. :func:`_watch` ends stalled members.
        """
        tracker = Tracker()
        self.trackers.append(tracker)
        while tracker.unique < sends:
            message = await layer.receive(channel)
            self.last_activity = now()
            if message.get("type") == MSG_TYPE and tracker.add(message["s"], message["q"]):
                await self.delivered(message["q"])

    def summary(self) -> dict[str, Any]:
        """A picklable summary for the parent."""
        ends = [t.last_new_t for t in self.trackers if t.last_new_t is not None]
        return {
            "counts": self.counts,
            "last": self.last,
            "unique": sum(t.unique for t in self.trackers),
            "duplicated": sum(t.duplicated for t in self.trackers),
            "out_of_order": sum(t.out_of_order for t in self.trackers),
            "last_new_t": max(ends, default=None),
        }


async def member_job(ctl: Control, *, env: Env, plan: MemberPlan) -> dict[str, Any]:
    """``plan.members`` channels in one group; report each message once all have it."""
    layer = env.layer()
    members = Members(plan.members, redis.asyncio.Redis.from_url(env.url) if plan.ack else None)
    try:
        channels = [await layer.new_channel() for _ in range(plan.members)]
        for channel in channels:
            await layer.group_add(GROUP, channel)
        tasks = [
            asyncio.ensure_future(members.member(layer, channel, plan.sends))
            for channel in channels
        ]
        await asyncio.sleep(SUBSCRIBE_GRACE_S)
        ctl.info(ready=True)
        members.last_activity = now()
        await _watch(tasks, members, env)
    finally:
        await close_layer(layer)
        if members.acks is not None:
            await members.acks.aclose()
    return members.summary()


async def _watch(tasks: Sequence[asyncio.Future[None]], members: Members, env: Env) -> None:
    """Wait for the member tasks; cancel them when idle for ``idle_s`` or at the deadline."""
    deadline = now() + env.deadline_s
    pending: set[asyncio.Future[None]] = set(tasks)
    while pending:
        _, pending = await asyncio.wait(pending, timeout=WATCH_S)
        if pending and (now() - members.last_activity > env.idle_s or now() > deadline):
            for task in pending:
                task.cancel()
            await asyncio.gather(*pending, return_exceptions=True)
            return
    for task in tasks:
        task.result()  # a failed receive fails the job


async def sender_job(
    ctl: Control, *, env: Env, sends: int, ack_timeout_s: float | None
) -> dict[str, Any]:
    """``sends`` group sends; with an ``ack_timeout_s`` each waits for every member process."""
    layer = env.layer()
    acks = redis.asyncio.Redis.from_url(env.url)
    started: list[float] = []
    timeouts = 0
    try:
        await layer.group_send(GROUP, {"type": WARMUP_TYPE})
        for seq in range(sends):
            started.append(now())
            await layer.group_send(GROUP, bench_message(0, seq))
            if ack_timeout_s is not None and not await _wait_acks(acks, seq, ack_timeout_s):
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


def _shares(members: int) -> list[int]:
    return [members // PROCESSES + (1 if k < members % PROCESSES else 0) for k in range(PROCESSES)]


def _start_members(ctx: Ctx, env: Env, members: int, sends: int, *, ack: bool) -> list[Job]:
    jobs = [
        ctx.pool.start(member_job, env=env, plan=MemberPlan(count, sends, ack))
        for count in _shares(members)
    ]
    for job in jobs:
        job.info(INFO_TIMEOUT_S)
    return jobs


def _counts(got: list[dict[str, Any]], expected: int) -> dict[str, Any]:
    return {
        "lost": expected - sum(g["unique"] for g in got),
        "duplicated": sum(g["duplicated"] for g in got),
        "out_of_order": sum(g["out_of_order"] for g in got),
        "expected": expected,
    }


def latency(ctx: Ctx, spec: LayerSpec, members: int) -> Measurement:
    """Median time from ``group_send`` to the last of ``members`` members."""
    sends = ctx.sizes.fanout_sends
    env = ctx.env(spec)
    jobs = _start_members(ctx, env, members, sends, ack=True)
    ctx.reset_commands()  # count the sends, not the members' group_add calls
    sender = ctx.pool.start(sender_job, env=env, sends=sends, ack_timeout_s=env.idle_s / 2)
    sent = sender.result(sends * env.idle_s + RESULT_GRACE_S)
    got = [job.result(env.deadline_s + RESULT_GRACE_S) for job in jobs]
    latencies = [
        (max(g["last"][seq] for g in got) - started) * MS
        for seq, started in enumerate(sent["started"])
        if all(g["counts"].get(seq, 0) == m for g, m in zip(got, _shares(members), strict=True))
    ]
    per_op, calls = ctx.per_op(sends)
    return ctx.measurement(
        spec,
        f"fanout-M{members}",
        LAST_MEMBER,
        statistics.median(latencies) if latencies else None,
        commands_per_op=per_op,
        extra={
            "complete_sends": len(latencies),
            "ack_timeouts": sent["ack_timeouts"],
            "commands": calls,
        },
        **_counts(got, sends * members),
    )


def burst(ctx: Ctx, spec: LayerSpec) -> list[Measurement]:
    """Back-to-back group sends to M members that keep receiving."""
    members, sends = ctx.sizes.burst_members, ctx.sizes.burst_sends
    env = ctx.env(spec)
    jobs = _start_members(ctx, env, members, sends, ack=False)
    ctx.reset_commands()
    sender = ctx.pool.start(sender_job, env=env, sends=sends, ack_timeout_s=None)
    sent = sender.result(env.deadline_s + RESULT_GRACE_S)
    got = [job.result(env.deadline_s + RESULT_GRACE_S) for job in jobs]
    unique = sum(g["unique"] for g in got)
    ends = [g["last_new_t"] for g in got if g["last_new_t"] is not None]
    rate = unique / (max(ends) - sent["started"][0]) if ends and unique else None
    per_op, calls = ctx.per_op(sends)
    counts = _counts(got, sends * members)
    scenario = f"burst-M{members}"
    return [
        ctx.measurement(
            spec,
            scenario,
            DELIVERIES,
            rate,
            commands_per_op=per_op,
            extra={"commands": calls},
            **counts,
        ),
        ctx.measurement(spec, scenario, SHARE, 100.0 * unique / (sends * members), **counts),
    ]


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
