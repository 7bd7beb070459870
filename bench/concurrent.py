"""Scenario 2: 32 tasks in one process each awaiting its sends in turn to one
channel received in another process (how a busy ASGI server sends).

Order is checked per sender. Ceiling: 32 tasks whose XADDs one flusher
coalesces into pipelines.
"""

from __future__ import annotations

from bench.context import Ctx, Measurement
from bench.layers import LayerSpec
from bench.p2p import two_process


def run(ctx: Ctx, spec: LayerSpec) -> list[Measurement]:
    """Scenario ``concurrent-32``."""
    tasks = ctx.sizes.concurrent_tasks
    return [two_process(ctx, spec, f"concurrent-{tasks}", n=ctx.sizes.concurrent, tasks=tasks)]
