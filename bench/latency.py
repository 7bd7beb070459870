"""Scenario 5: ping-pong between two processes; round-trip p50 / p99 / p99.9.

Each process owns a ``new_channel()`` channel; the pinger sends a ping and
waits for the pong before the next one. Ceiling: the same on bare streams.
"""

from __future__ import annotations

from typing import Any

from bench import raw
from bench.common import INFO_TIMEOUT_S, RESULT_GRACE_S, SUBSCRIBE_GRACE_S
from bench.context import Ctx, Measurement
from bench.layers import LayerSpec, close_layer, make_layer
from bench.messages import Receiver, now
from bench.pool import Control

import asyncio

PING = "bench.ping"
PONG = "bench.pong"
MS = 1000.0


async def ponger_job(ctl: Control, *, spec: LayerSpec, url: str, n: int, idle_s: float) -> dict[str, Any]:
    """Answer every ping with a pong to its ``reply_to`` channel."""
    layer = make_layer(spec, url)
    answered = 0
    try:
        channel = await layer.new_channel()
        receiver = Receiver(layer, channel)
        receiver.start()
        await asyncio.sleep(SUBSCRIBE_GRACE_S)
        ctl.info(channel=channel)
        while answered < n:
            message = await receiver.next(idle_s)
            if message is None:
                break
            await layer.send(message["r"], {"type": PONG, "q": message["q"]})
            answered += 1
        await receiver.close()
    finally:
        await close_layer(layer)
    return {"answered": answered}


async def pinger_job(
    ctl: Control, *, spec: LayerSpec, url: str, peer: str, n: int, warmup: int, idle_s: float
) -> dict[str, Any]:
    """``warmup`` + ``n`` round trips to ``peer``; RTTs in milliseconds."""
    layer = make_layer(spec, url)
    rtts: list[float] = []
    lost = out_of_order = 0
    try:
        channel = await layer.new_channel()
        receiver = Receiver(layer, channel)
        receiver.start()
        await asyncio.sleep(SUBSCRIBE_GRACE_S)
        for seq in range(warmup + n):
            t0 = now()
            await layer.send(peer, {"type": PING, "q": seq, "r": channel})
            while True:
                message = await receiver.next(idle_s)
                if message is None or message["q"] == seq:
                    break
                out_of_order += 1  # a late pong of an earlier ping
            if message is None:
                lost += 1
            elif seq >= warmup:
                rtts.append((now() - t0) * MS)
        await receiver.close()
    finally:
        await close_layer(layer)
    return {**raw._latency_summary(rtts, lost), "out_of_order": out_of_order}


def run(ctx: Ctx, spec: LayerSpec) -> list[Measurement]:
    """Scenario ``pingpong``: three rows, p50 / p99 / p99.9."""
    n, warmup, idle_s = ctx.sizes.pingpong, ctx.sizes.pingpong_warmup, ctx.sizes.idle_s
    limit = n * idle_s / 10 + RESULT_GRACE_S
    if spec.is_raw:
        ponger = ctx.pool.start(raw.ponger_job, url=ctx.url, n=n + warmup, idle_s=idle_s)
        ponger.info(INFO_TIMEOUT_S)
        pinger = ctx.pool.start(raw.pinger_job, url=ctx.url, n=n, warmup=warmup, idle_s=idle_s)
    else:
        ponger = ctx.pool.start(ponger_job, spec=spec, url=ctx.url, n=n + warmup, idle_s=idle_s)
        peer = ponger.info(INFO_TIMEOUT_S)["channel"]
        pinger = ctx.pool.start(
            pinger_job, spec=spec, url=ctx.url, peer=peer, n=n, warmup=warmup, idle_s=idle_s
        )
    got = pinger.result(limit)
    ponger.result(limit)
    per_op, calls = ctx.per_op(n + warmup)
    counts: dict[str, Any] = {
        "lost": got["lost"], "out_of_order": got.get("out_of_order", 0), "expected": n + warmup,
    }
    return [
        ctx.measurement("pingpong", "rtt p50", "ms", "lower", spec, got["p50"], commands_per_op=per_op,
                        extra={"commands": calls}, **counts),
        ctx.measurement("pingpong", "rtt p99", "ms", "lower", spec, got["p99"], **counts),
        ctx.measurement("pingpong", "rtt p99.9", "ms", "lower", spec, got["p999"], **counts),
    ]
