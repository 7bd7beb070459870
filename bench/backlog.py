"""Scenario 6: a backlog nobody receives.

``backlog-memory``: ``n`` sends spread over normal channels of
``per_channel`` messages each (the default capacity), 32 senders at a time;
Redis memory per queued message is the INFO ``used_memory`` delta divided
by the messages sent.

``backlog-expiry``: with ``expiry`` set to a few seconds, messages to normal
channels and to never-read ``new_channel()`` channels; the number of keys
under the prefix (counted with SCAN) ``expiry`` + 5 s after the last send,
which must be zero, and how long they took to vanish.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from channels.exceptions import ChannelFull

from bench.common import RESULT_GRACE_S
from bench.context import Ctx, Measurement
from bench.layers import PREFIX, LayerSpec, close_layer, make_layer
from bench.messages import bench_message, now
from bench.pool import Control

SENDERS = 32
EXPIRY_GRACE_S = 5.0
POLL_S = 0.25
SPECIFIC_CHANNELS = 2
NORMAL_CHANNELS = 5


async def fill_job(
    ctl: Control, *, spec: LayerSpec, url: str, n: int, per_channel: int, specific: int = 0,
    overrides: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Send ``n`` messages, ``per_channel`` per channel, to channels nobody reads."""
    layer = make_layer(spec, url, **(overrides or {}))
    channels = [f"bench.backlog.{i}" for i in range(max(1, n // per_channel))]
    channels += [await layer.new_channel() for _ in range(specific)]
    full = 0

    async def sender(offset: int) -> None:
        nonlocal full
        for index in range(offset, n, SENDERS):
            try:
                await layer.send(channels[index % len(channels)], bench_message(offset, index))
            except ChannelFull:
                full += 1

    try:
        t0 = now()
        await asyncio.gather(*(sender(k) for k in range(min(SENDERS, n))))
        t_end = now()
    finally:
        await close_layer(layer)
    return {"t0": t0, "t_end": t_end, "full": full, "channels": len(channels)}


def memory(ctx: Ctx, spec: LayerSpec) -> Measurement:
    """Bytes of Redis memory per queued message."""
    n = ctx.sizes.backlog
    before = ctx.used_memory()
    job = ctx.pool.start(fill_job, spec=spec, url=ctx.url, n=n, per_channel=ctx.sizes.backlog_per_channel)
    got = job.result(max(120.0, n / 100) + RESULT_GRACE_S)
    after = ctx.used_memory()
    stored = n - got["full"]
    per_op, calls = ctx.per_op(n)
    return ctx.measurement(
        "backlog-memory", "Redis memory per message", "bytes", "lower", spec,
        (after - before) / stored if stored else None,
        lost=got["full"], expected=n, commands_per_op=per_op,
        extra={"keys": ctx.admin.dbsize(), "used_memory_delta": after - before, "channel_full": got["full"],
               "send_rate": n / (got["t_end"] - got["t0"]), "commands": calls},
    )


def _keys(ctx: Ctx) -> int:
    return sum(1 for _ in ctx.admin.scan_iter(match=f"{PREFIX}*", count=1000))


def expiry(ctx: Ctx, spec: LayerSpec) -> Measurement:
    """Keys left ``expiry`` + 5 s after the last send (must be 0)."""
    expiry_s = ctx.sizes.expiry_s
    n = ctx.sizes.expiry_messages
    job = ctx.pool.start(
        fill_job, spec=spec, url=ctx.url, n=n, per_channel=max(1, n // NORMAL_CHANNELS),
        specific=SPECIFIC_CHANNELS, overrides={"expiry": expiry_s},
    )
    got = job.result(60.0 + RESULT_GRACE_S)
    keys_after_send = _keys(ctx)
    limit = got["t_end"] + expiry_s + EXPIRY_GRACE_S
    left = keys_after_send
    vanished_after: float | None = None
    while time.monotonic() < limit:
        left = _keys(ctx)
        if left == 0:
            vanished_after = time.monotonic() - got["t_end"]
            break
        time.sleep(POLL_S)
    return ctx.measurement(
        "backlog-expiry", "keys left after expiry + 5 s", "keys",
        "lower", spec, float(left), expected=n,
        extra={"keys_after_send": keys_after_send, "vanished_after_s": vanished_after,
               "expiry_s": expiry_s},
    )


def run(ctx: Ctx, spec: LayerSpec, *, with_memory: bool = True) -> list[Measurement]:
    """Scenarios ``backlog-memory`` and ``backlog-expiry`` (raw has none)."""
    if spec.is_raw:
        return []
    results = []
    if with_memory:
        results.append(memory(ctx, spec))
        ctx.flush()
    results.append(expiry(ctx, spec))
    return results
