"""Scenario 1: point to point, ~100-byte messages, each send awaited in turn.

``p2p-2proc``: a sender process and a receiver process that owns a
``new_channel()`` channel. ``p2p-1proc``: both in one process, one layer
instance. Ceiling: sequential XADD read by a blocking XREAD.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench import raw
from bench.common import (
    INFO_TIMEOUT_S,
    RESULT_GRACE_S,
    SUBSCRIBE_GRACE_S,
    Env,
    ReceivePlan,
    SendPlan,
    collect,
    recv_job,
    send_job,
    send_with_backoff,
    throughput,
)
from bench.context import THROUGHPUT, Ctx, Measurement
from bench.layers import LayerSpec, close_layer
from bench.messages import Receiver, Tracker, bench_message, now
from bench.pool import Control, Job


def _start(ctx: Ctx, spec: LayerSpec, n: int, tasks: int) -> tuple[Job, Job, Env]:
    env = ctx.env(spec, n)
    if spec.is_raw:
        receiver = ctx.pool.start(
            raw.reader_job, url=ctx.url, n=n, idle_s=env.idle_s, deadline_s=env.deadline_s
        )
        receiver.info(INFO_TIMEOUT_S)
        if tasks == 1:
            sender = ctx.pool.start(raw.seq_sender_job, url=ctx.url, n=n)
        else:
            sender = ctx.pool.start(raw.coalesced_sender_job, url=ctx.url, n=n, tasks=tasks)
        return receiver, sender, env
    receiver = ctx.pool.start(recv_job, env=env, plan=ReceivePlan(n=n))
    channel = receiver.info(INFO_TIMEOUT_S)["channel"]
    plan = SendPlan(channel=channel, n=n, tasks=tasks)
    return receiver, ctx.pool.start(send_job, env=env, plan=plan), env


def two_process(ctx: Ctx, spec: LayerSpec, scenario: str, *, n: int, tasks: int = 1) -> Measurement:
    """A receiver process and a sender process; msg/s from the first send to the n-th receipt."""
    receiver, sender, env = _start(ctx, spec, n, tasks)
    sent = sender.result(env.deadline_s + RESULT_GRACE_S)
    got = receiver.result(env.deadline_s + RESULT_GRACE_S)
    per_op, calls = ctx.per_op(n - sent["failed"])
    done_t = got["complete_t"] or got["last_t"]
    return ctx.measurement(
        spec,
        scenario,
        THROUGHPUT,
        throughput(got["unique"], sent["t0"], done_t),
        lost=n - got["unique"],
        duplicated=got["duplicated"],
        out_of_order=got["out_of_order"],
        expected=n,
        commands_per_op=per_op,
        extra={
            "channel_full": sent["full"],
            "send_failed": sent["failed"],
            "commands": calls,
            "round_trips": sent.get("round_trips"),
        },
    )


async def local_job(ctl: Control, *, env: Env, n: int) -> dict[str, Any]:
    """One process, one layer instance: a receiving task and a sending loop."""
    layer = env.layer()
    full = failed = 0
    try:
        channel = await layer.new_channel()
        receiver = Receiver(layer, channel)
        receiver.start()
        await asyncio.sleep(SUBSCRIBE_GRACE_S)
        tracker = Tracker()
        receiving = asyncio.ensure_future(
            collect(receiver, tracker, n=n, idle_s=env.idle_s, deadline=now() + env.deadline_s)
        )
        t0 = now()
        for seq in range(n):
            sent, fulls = await send_with_backoff(layer, channel, bench_message(0, seq))
            full += fulls
            failed += not sent
        complete_t = await receiving
        await receiver.close()
    finally:
        await close_layer(layer)
    return {**tracker.summary(), "complete_t": complete_t, "t0": t0, "full": full}


def one_process(ctx: Ctx, spec: LayerSpec) -> Measurement:
    """Sender and receiver in one process."""
    n = ctx.sizes.p2p
    env = ctx.env(spec, n)
    if spec.is_raw:
        job = ctx.pool.start(
            raw.local_job, url=ctx.url, n=n, idle_s=env.idle_s, deadline_s=env.deadline_s
        )
    else:
        job = ctx.pool.start(local_job, env=env, n=n)
    got = job.result(env.deadline_s + RESULT_GRACE_S)
    per_op, calls = ctx.per_op(n)
    return ctx.measurement(
        spec,
        "p2p-1proc",
        THROUGHPUT,
        throughput(got["unique"], got["t0"], got["complete_t"] or got["last_t"]),
        lost=n - got["unique"],
        duplicated=got["duplicated"],
        out_of_order=got["out_of_order"],
        expected=n,
        commands_per_op=per_op,
        extra={"channel_full": got.get("full", 0), "commands": calls},
    )


def run_two_process(ctx: Ctx, spec: LayerSpec) -> list[Measurement]:
    """Scenario ``p2p-2proc``."""
    return [two_process(ctx, spec, "p2p-2proc", n=ctx.sizes.p2p)]


def run_one_process(ctx: Ctx, spec: LayerSpec) -> list[Measurement]:
    """Scenario ``p2p-1proc``."""
    return [one_process(ctx, spec)]
