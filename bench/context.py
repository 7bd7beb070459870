"""What the parent hands to every scenario: the Redis, the helpers, the sizes."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any, NamedTuple

import redis

from bench.common import Env
from bench.layers import LayerSpec
from bench.pool import Pool

# Commands the harness itself issues (acks, admin); not charged to layers.
HARNESS_COMMANDS = frozenset(
    {
        "info",
        "config|resetstat",
        "config|get",
        "flushall",
        "rpush",
        "blpop",
        "ping",
        "dbsize",
        "scan",
        "hello",
        "select",
        "client|setinfo",
        "client|setname",
        "memory|usage",
    }
)


class Metric(NamedTuple):
    """What a figure measures, in which unit, and which direction is better."""

    name: str
    unit: str
    better: str  # "higher" or "lower"


THROUGHPUT = Metric("throughput", "msg/s", "higher")
DEFAULT_DEADLINE_S = 60.0
# A job's receiving phase ends at the latest after this long (or n / 100 s for big n).
MIN_RATE_PER_S = 100


@dataclass(frozen=True)
class Sizes:
    """Message counts per scenario."""

    p2p: int = 5000
    concurrent: int = 10_000
    concurrent_tasks: int = 32
    worker: int = 5000
    worker_consumers: tuple[int, ...] = (1, 2, 4)
    fanout_members: tuple[int, ...] = (10, 100, 1000)
    fanout_sends: int = 60
    burst_members: int = 100
    burst_sends: int = 100
    pingpong: int = 5000
    pingpong_warmup: int = 100
    backlog: int = 100_000
    backlog_per_channel: int = 100
    expiry_s: int = 2
    expiry_messages: int = 200
    idle_s: float = 3.0
    redis_benchmark_requests: int = 20_000

    @classmethod
    def smoke(cls) -> Sizes:
        """Tiny counts: every scenario once, well under a minute."""
        return cls(
            p2p=300,
            concurrent=320,
            worker=300,
            worker_consumers=(1, 2),
            fanout_members=(10, 100),
            fanout_sends=5,
            burst_members=20,
            burst_sends=20,
            pingpong=300,
            pingpong_warmup=20,
            backlog=2000,
            backlog_per_channel=100,
            expiry_messages=50,
            idle_s=2.0,
            redis_benchmark_requests=2000,
        )


@dataclass
class Measurement:
    """One figure of one layer in one round."""

    scenario: str
    metric: str
    unit: str
    better: str  # "higher" or "lower"
    layer: str
    round: int
    value: float | None
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    expected: int = 0
    commands_per_op: float | None = None
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


@dataclass
class Ctx:
    """The run's shared state, in the parent process."""

    url: str
    pool: Pool
    sizes: Sizes
    admin: redis.Redis
    round: int = 0

    def flush(self) -> None:
        """Empty the bench server (ours alone) and reset its statistics."""
        self.admin.flushall()
        self.admin.config_resetstat()

    def reset_commands(self) -> None:
        """Start counting commands afresh (e.g. once receivers have joined their groups)."""
        self.admin.config_resetstat()

    def commands(self) -> dict[str, int]:
        """Calls per command since the last reset (script-internal calls included).

        The harness's own commands (acks, statistics, flushes) are left out.
        """
        stats = self.admin.info("commandstats")
        calls: dict[str, int] = {}
        for key, value in stats.items():
            name = key.removeprefix("cmdstat_")
            if name not in HARNESS_COMMANDS:
                calls[name] = int(value["calls"])
        return calls

    def used_memory(self) -> int:
        """INFO memory used_memory, in bytes."""
        return int(self.admin.info("memory")["used_memory"])

    def measurement(
        self, spec: LayerSpec, scenario: str, metric: Metric, value: float | None, **kwargs: Any
    ) -> Measurement:
        """A :class:`Measurement` of this round."""
        return Measurement(
            scenario,
            metric.name,
            metric.unit,
            metric.better,
            spec.name,
            self.round,
            value,
            **kwargs,
        )

    def env(self, spec: LayerSpec, n: int = 0) -> Env:
        """The job environment for ``spec``, with a deadline that fits ``n`` messages."""
        deadline_s = max(DEFAULT_DEADLINE_S, n / MIN_RATE_PER_S)
        return Env(spec=spec, url=self.url, idle_s=self.sizes.idle_s, deadline_s=deadline_s)

    def per_op(self, ops: int) -> tuple[float | None, dict[str, int]]:
        """Redis commands per operation since the last flush, and the breakdown."""
        calls = self.commands()
        if ops <= 0:
            return None, calls
        return sum(calls.values()) / ops, calls
