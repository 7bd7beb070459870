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
    INFO_TIMEOUT_S, RESULT_GRACE_S, SUBSCRIBE_GRACE_S, collect, recv_job, send_job, send_with_backoff, throughput,
)
from bench.context import Ctx, Measurement
from bench.layers import LayerSpec, close_layer, make_layer
from bench.messages import Receiver, Tracker, bench_message, now
from bench.pool import Control

MSG_PER_S = "msg/s"


def deadline_s(ctx: Ctx, n: int) -> float:
    """A generous bound for receiving ``n`` messages (at 100 msg/s, at least a minute)."""
    return max(60.0, n / 100)


def two_process(
    ctx: Ctx, spec: LayerSpec, scenario: str, *, n: int, tasks: int = 1, extra: dict[str, Any] | None = None
) -> Measurement:
    """A receiver process and a sender process; msg/s from the first send to the n-th distinct receipt."""
    limit = deadline_s(ctx, n)
    if spec.is_raw:
        receiver = ctx.pool.start(raw.reader_job, url=ctx.url, n=n, idle_s=ctx.sizes.idle_s, deadline_s=limit)
        receiver.info(INFO_TIMEOUT_S)
        if tasks == 1:
            sender = ctx.pool.start(raw.seq_sender_job, url=ctx.url, n=n)
        else:
            sender = ctx.pool.start(raw.coalesced_sender_job, url=ctx.url, n=n, tasks=tasks)
    else:
        receiver = ctx.pool.start(
            recv_job, spec=spec, url=ctx.url, n=n, idle_s=ctx.sizes.idle_s, deadline_s=limit
        )
        channel = receiver.info(INFO_TIMEOUT_S)["channel"]
        sender = ctx.pool.start(send_job, spec=spec, url=ctx.url, channel=channel, n=n, tasks=tasks)
    sent = sender.result(limit + RESULT_GRACE_S)
    got = receiver.result(limit + RESULT_GRACE_S)
    ops = n - sent["failed"]
    per_op, calls = ctx.per_op(ops)
    done_t = got["complete_t"] or got["last_t"]
    return ctx.measurement(
        scenario, "throughput", MSG_PER_S, "higher", spec, throughput(got["unique"], sent["t0"], done_t),
        lost=n - got["unique"], duplicated=got["duplicated"], out_of_order=got["out_of_order"], expected=n,
        commands_per_op=per_op,
        extra={"channel_full": sent["full"], "send_failed": sent["failed"], "commands": calls,
               "round_trips": sent.get("round_trips"), **(extra or {})},
    )


async def local_job(
    ctl: Control, *, spec: LayerSpec, url: str, n: int, idle_s: float, deadline_s: float
) -> dict[str, Any]:
    """One process, one layer instance: a receiving task and a sending loop."""
    layer = make_layer(spec, url)
    full = failed = 0
    try:
        channel = await layer.new_channel()
        receiver = Receiver(layer, channel)
        receiver.start()
        await asyncio.sleep(SUBSCRIBE_GRACE_S)
        tracker = Tracker()
        receiving = asyncio.ensure_future(
            collect(receiver, tracker, n=n, idle_s=idle_s, deadline=now() + deadline_s)
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
    return {**tracker.summary(), "complete_t": complete_t, "t0": t0, "full": full, "failed": failed}


def one_process(ctx: Ctx, spec: LayerSpec) -> Measurement:
    """Sender and receiver in one process."""
    n = ctx.sizes.p2p
    limit = deadline_s(ctx, n)
    if spec.is_raw:
        job = ctx.pool.start(raw.local_job, url=ctx.url, n=n, idle_s=ctx.sizes.idle_s, deadline_s=limit)
    else:
        job = ctx.pool.start(local_job, spec=spec, url=ctx.url, n=n, idle_s=ctx.sizes.idle_s, deadline_s=limit)
    got = job.result(limit + RESULT_GRACE_S)
    per_op, calls = ctx.per_op(n)
    return ctx.measurement(
        "p2p-1proc", "throughput", MSG_PER_S, "higher", spec,
        throughput(got["unique"], got["t0"], got["complete_t"] or got["last_t"]),
        lost=n - got["unique"], duplicated=got["duplicated"], out_of_order=got["out_of_order"], expected=n,
        commands_per_op=per_op,
        extra={"channel_full": got.get("full", 0), "commands": calls},
    )


def run_two_process(ctx: Ctx, spec: LayerSpec) -> list[Measurement]:
    """Scenario ``p2p-2proc``."""
    return [two_process(ctx, spec, "p2p-2proc", n=ctx.sizes.p2p)]


def run_one_process(ctx: Ctx, spec: LayerSpec) -> list[Measurement]:
    """Scenario ``p2p-1proc``."""
    return [one_process(ctx, spec)]
