"""Scenario 5: ping-pong between two processes; round-trip p50 / p99 / p99.9.

Each process owns a ``new_channel()`` channel; the pinger sends a ping and
waits for the pong before the next one. Ceiling: the same on bare streams.
Both sides await ``receive()`` in their own task (:class:`InlineReceiver`), as
the raw ceiling awaits its ``XREAD``.
"""

from __future__ import annotations

import asyncio
from typing import Any

from bench import raw
from bench.common import INFO_TIMEOUT_S, RESULT_GRACE_S, SUBSCRIBE_GRACE_S, Env
from bench.context import Ctx, Measurement, Metric
from bench.layers import LayerSpec, close_layer
from bench.messages import InlineReceiver, Message, now
from bench.pool import Control

PING = "bench.ping"
PONG = "bench.pong"
MS = 1000.0
P50 = Metric("rtt p50", "ms", "lower")
P99 = Metric("rtt p99", "ms", "lower")
P999 = Metric("rtt p99.9", "ms", "lower")


async def ponger_job(ctl: Control, *, env: Env, n: int) -> dict[str, Any]:
    """Answer every ping with a pong to its ``reply_to`` channel."""
    layer = env.layer()
    answered = 0
    try:
        channel = await layer.new_channel()
        receiver = InlineReceiver(layer, channel)
        receiver.start()
        await asyncio.sleep(SUBSCRIBE_GRACE_S)
        ctl.info(channel=channel)
        while answered < n:
            message = await receiver.next(env.idle_s)
            if message is None:
                break
            await layer.send(message["r"], {"type": PONG, "q": message["q"]})
            answered += 1
        await receiver.close()
    finally:
        await close_layer(layer)
    return {"answered": answered}


async def _pong(receiver: InlineReceiver, seq: int, idle_s: float) -> tuple[Message | None, int]:
    """The pong of ``seq`` (``None`` if none came), and how many stale pongs came first."""
    stale = 0
    while True:
        message = await receiver.next(idle_s)
        if message is None or message["q"] == seq:
            return message, stale
        stale += 1


async def pinger_job(ctl: Control, *, env: Env, peer: str, n: int, warmup: int) -> dict[str, Any]:
    """``warmup`` + ``n`` round trips to ``peer``; RTTs in milliseconds."""
    layer = env.layer()
    rtts: list[float] = []
    lost = out_of_order = 0
    try:
        channel = await layer.new_channel()
        receiver = InlineReceiver(layer, channel)
        receiver.start()
        await asyncio.sleep(SUBSCRIBE_GRACE_S)
        for seq in range(warmup + n):
            t0 = now()
            await layer.send(peer, {"type": PING, "q": seq, "r": channel})
            message, stale = await _pong(receiver, seq, env.idle_s)
            out_of_order += stale
            if message is None:
                lost += 1
            elif seq >= warmup:
                rtts.append((now() - t0) * MS)
        await receiver.close()
    finally:
        await close_layer(layer)
    return {**raw.latency_summary(rtts, lost), "out_of_order": out_of_order}


def run(ctx: Ctx, spec: LayerSpec) -> list[Measurement]:
    """Scenario ``pingpong``: three rows, p50 / p99 / p99.9."""
    n, warmup = ctx.sizes.pingpong, ctx.sizes.pingpong_warmup
    env = ctx.env(spec)
    limit = n * env.idle_s / 10 + RESULT_GRACE_S
    if spec.is_raw:
        ponger = ctx.pool.start(raw.ponger_job, url=ctx.url, n=n + warmup, idle_s=env.idle_s)
        ponger.info(INFO_TIMEOUT_S)
        pinger = ctx.pool.start(raw.pinger_job, url=ctx.url, n=n, warmup=warmup, idle_s=env.idle_s)
    else:
        ponger = ctx.pool.start(ponger_job, env=env, n=n + warmup)
        peer = ponger.info(INFO_TIMEOUT_S)["channel"]
        pinger = ctx.pool.start(pinger_job, env=env, peer=peer, n=n, warmup=warmup)
    got = pinger.result(limit)
    ponger.result(limit)
    per_op, calls = ctx.per_op(n + warmup)
    counts: dict[str, Any] = {
        "lost": got["lost"],
        "out_of_order": got.get("out_of_order", 0),
        "expected": n + warmup,
    }
    return [
        ctx.measurement(
            spec,
            "pingpong",
            P50,
            got["p50"],
            commands_per_op=per_op,
            extra={"commands": calls},
            **counts,
        ),
        ctx.measurement(spec, "pingpong", P99, got["p99"], **counts),
        ctx.measurement(spec, "pingpong", P999, got["p999"], **counts),
    ]
