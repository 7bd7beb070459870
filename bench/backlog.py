"""Scenario 6: a backlog nobody receives.

``backlog-memory``: ``n`` sends spread over normal channels of
``per_channel`` messages each (the default capacity), 32 senders at a time;
Redis memory per queued message is the INFO ``used_memory`` delta divided
by the messages stored.

``backlog-expiry``: with ``expiry`` set to a few seconds, messages to normal
channels and to never-read ``new_channel()`` channels; the number of keys
under the prefix (counted with SCAN) 15 s after ``expiry``, which must be
zero, and how long after the last send they were all gone.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from channels.exceptions import ChannelFull

from bench.common import RESULT_GRACE_S, Env
from bench.context import Ctx, Measurement, Metric
from bench.layers import PREFIX, LayerSpec, close_layer
from bench.messages import bench_message, now
from bench.pool import Control

SENDERS = 32
# streams_layer keeps keys expiry + 10 s (its KEY_TTL_MARGIN_S); wait a bit longer.
EXPIRY_GRACE_S = 15.0
POLL_S = 0.25
SPECIFIC_CHANNELS = 2
NORMAL_CHANNELS = 5
LEFTOVERS_SHOWN = 10
MEMORY = Metric("Redis memory per message", "bytes", "lower")
KEYS_LEFT = Metric("keys left after expiry + 15 s", "keys", "lower")


@dataclass(frozen=True)
class FillPlan:
    """``n`` messages, ``per_channel`` per normal channel, plus ``specific`` new channels."""

    n: int
    per_channel: int
    specific: int = 0
    overrides: dict[str, Any] = field(default_factory=dict)


async def fill_job(ctl: Control, *, env: Env, plan: FillPlan) -> dict[str, Any]:
    """Send to channels nobody reads; ChannelFull is counted, not retried."""
    layer = env.layer(**plan.overrides)
    channels = [f"bench.backlog.{i}" for i in range(max(1, plan.n // plan.per_channel))]
    full = 0

    async def sender(offset: int) -> None:
        nonlocal full
        for index in range(offset, plan.n, SENDERS):
            try:
                await layer.send(channels[index % len(channels)], bench_message(offset, index))
            except ChannelFull:
                full += 1

    try:
        channels += [await layer.new_channel() for _ in range(plan.specific)]
        t0 = now()
        await asyncio.gather(*(sender(k) for k in range(min(SENDERS, plan.n))))
        t_end = now()
    finally:
        await close_layer(layer)
    return {"t0": t0, "t_end": t_end, "full": full, "channels": len(channels)}


def memory(ctx: Ctx, spec: LayerSpec) -> Measurement:
    """Bytes of Redis memory per queued message."""
    n = ctx.sizes.backlog
    env = ctx.env(spec, n)
    before = ctx.used_memory()
    plan = FillPlan(n=n, per_channel=ctx.sizes.backlog_per_channel)
    got = ctx.pool.start(fill_job, env=env, plan=plan).result(env.deadline_s + RESULT_GRACE_S)
    after = ctx.used_memory()
    stored = n - got["full"]
    per_op, calls = ctx.per_op(n)
    return ctx.measurement(
        spec,
        "backlog-memory",
        MEMORY,
        (after - before) / stored if stored else None,
        lost=got["full"],
        expected=n,
        commands_per_op=per_op,
        extra={
            "keys": ctx.admin.dbsize(),
            "used_memory_delta": after - before,
            "channel_full": got["full"],
            "send_rate": n / (got["t_end"] - got["t0"]),
            "commands": calls,
        },
    )


def _keys(ctx: Ctx) -> list[bytes]:
    return list(ctx.admin.scan_iter(match=f"{PREFIX}*", count=1000))


def expiry(ctx: Ctx, spec: LayerSpec) -> list[Measurement]:
    """Keys left ``expiry`` + 15 s after the last send (must be 0), and when they went."""
    expiry_s = ctx.sizes.expiry_s
    n = ctx.sizes.expiry_messages
    env = ctx.env(spec)
    plan = FillPlan(
        n=n,
        per_channel=max(1, n // NORMAL_CHANNELS),
        specific=SPECIFIC_CHANNELS,
        overrides={"expiry": expiry_s},
    )
    got = ctx.pool.start(fill_job, env=env, plan=plan).result(env.deadline_s + RESULT_GRACE_S)
    keys_after_send = len(_keys(ctx))
    # The job's clock is the same CLOCK_MONOTONIC as this process's.
    limit = got["t_end"] + expiry_s + EXPIRY_GRACE_S
    left = _keys(ctx)
    gone_after: float | None = None
    while True:
        if not left:
            gone_after = time.monotonic() - got["t_end"]
            break
        if time.monotonic() > limit:
            break
        time.sleep(POLL_S)
        left = _keys(ctx)
    extra = {
        "keys_after_send": keys_after_send,
        "expiry_s": expiry_s,
        "leftover_pttl_ms": {key.decode(): ctx.admin.pttl(key) for key in left[:LEFTOVERS_SHOWN]},
    }
    gone = Metric(f"keys gone after (expiry {expiry_s} s)", "s", "lower")
    return [
        ctx.measurement(
            spec, "backlog-expiry", KEYS_LEFT, float(len(left)), expected=n, extra=extra
        ),
        ctx.measurement(spec, "backlog-expiry", gone, gone_after, expected=n, extra=extra),
    ]


def run(ctx: Ctx, spec: LayerSpec) -> list[Measurement]:
    """Scenarios ``backlog-memory`` and ``backlog-expiry`` (raw has none)."""
    if spec.is_raw:
        return []
    results = [memory(ctx, spec)]
    ctx.flush()
    results.extend(expiry(ctx, spec))
    return results
