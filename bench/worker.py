"""Scenario 3: one producer, K consumer processes on one normal channel.

Every consumer receives from the same channel name; the producer sends
``n`` messages, then K stop messages. Unique msg/s, lost and duplicated are
counted over all consumers together.
"""

from __future__ import annotations

from bench.common import (
    INFO_TIMEOUT_S,
    RESULT_GRACE_S,
    ReceivePlan,
    SendPlan,
    recv_job,
    send_job,
    throughput,
)
from bench.context import Ctx, Measurement, Metric
from bench.layers import LayerSpec
from bench.messages import merge_unique

CHANNEL = "bench.work"
UNIQUE_THROUGHPUT = Metric("unique throughput", "msg/s", "higher")


def run(ctx: Ctx, spec: LayerSpec) -> list[Measurement]:
    """Scenarios ``worker-K1``, ``worker-K2``, ``worker-K4`` (raw has none)."""
    if spec.is_raw:
        return []
    results = []
    for consumers in ctx.sizes.worker_consumers:
        ctx.flush()
        results.append(one(ctx, spec, consumers))
    return results


def one(ctx: Ctx, spec: LayerSpec, consumers: int) -> Measurement:
    """K consumers, one producer."""
    n = ctx.sizes.worker
    env = ctx.env(spec, n)
    plan = ReceivePlan(n=n, channel=CHANNEL, with_seqs=True)
    jobs = [ctx.pool.start(recv_job, env=env, plan=plan) for _ in range(consumers)]
    for job in jobs:
        job.info(INFO_TIMEOUT_S)
    producer = ctx.pool.start(
        send_job, env=env, plan=SendPlan(channel=CHANNEL, n=n, stops=consumers)
    )
    sent = producer.result(env.deadline_s + RESULT_GRACE_S)
    got = [job.result(env.deadline_s + RESULT_GRACE_S) for job in jobs]
    unique = merge_unique(got)
    received = sum(g["received"] for g in got)
    ends = [g["last_new_t"] for g in got if g["last_new_t"] is not None]
    per_op, calls = ctx.per_op(n)
    return ctx.measurement(
        spec,
        f"worker-K{consumers}",
        UNIQUE_THROUGHPUT,
        throughput(unique, sent["t0"], max(ends) if ends else None),
        lost=n - unique,
        duplicated=received - unique,
        out_of_order=sum(g["out_of_order"] for g in got),
        expected=n,
        commands_per_op=per_op,
        extra={
            "per_consumer": [g["received"] for g in got],
            "channel_full": sent["full"],
            "commands": calls,
        },
    )
