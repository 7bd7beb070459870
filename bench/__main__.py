"""``python -m bench``: run the benchmark; see ``bench/README.md``."""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import logging
import os
import shlex
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import redis

from bench import backlog, concurrent, fanout, latency, p2p, raw, soak, worker
from bench.context import Ctx, Measurement, Metric, Sizes
from bench.layers import DEFAULT_LAYERS, LayerSpec, import_class, parse_layers
from bench.pool import JobError, Pool
from bench.report import summarize, text_table, violations, write_json, write_markdown
from devtools.redis_servers import RedisServer

logger = logging.getLogger("bench")

Scenario = Callable[[Ctx, LayerSpec], list[Measurement]]


def _p2p(ctx: Ctx, spec: LayerSpec) -> list[Measurement]:
    result = p2p.run_two_process(ctx, spec)
    ctx.flush()
    return result + p2p.run_one_process(ctx, spec)


def _backlog(ctx: Ctx, spec: LayerSpec) -> list[Measurement]:
    # Memory and expiry are not noisy figures: measured in the first round only.
    return backlog.run(ctx, spec) if ctx.round == 1 else []


SCENARIOS: dict[str, Scenario] = {
    "p2p": _p2p,
    "concurrent": concurrent.run,
    "worker": worker.run,
    "fanout": fanout.run,
    "latency": latency.run,
    "backlog": _backlog,
}
REDIS_BENCHMARK = "redis-benchmark"
ERROR = Metric("error", "-", "higher")
RATIO_NOTE = (
    "Ratios are median / reference median: above 1 is better for msg/s and req/s, "
    "below 1 for ms, s and bytes."
)


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--smoke",
        action="store_true",
        help="tiny counts, one round; exit 1 on lost/duplicated messages of strict layers",
    )
    parser.add_argument(
        "--rounds", type=int, default=None, help="interleaved rounds (default 3, smoke 1)"
    )
    parser.add_argument(
        "--only", default="", help=f"comma list of: {', '.join([*SCENARIOS, REDIS_BENCHMARK])}"
    )
    parser.add_argument(
        "--layers",
        default=",".join(DEFAULT_LAYERS),
        help="comma list of streams, core, pubsub, raw, or name=module.Class[@key:value;...]",
    )
    parser.add_argument(
        "--pin",
        action="store_true",
        help="pin helper process i to CPU i mod n (the Redis server and the parent stay unpinned)",
    )
    parser.add_argument("--json", type=Path, help="write every measurement and the summary as JSON")
    parser.add_argument("--markdown", type=Path, help="write the summary table as markdown")
    parser.add_argument("--verbose", "-v", action="store_true")
    return parser.parse_args(argv)


def available(specs: list[LayerSpec], explicit: bool) -> tuple[list[LayerSpec], list[str]]:
    """The layers that import; a missing default layer is skipped with a warning."""
    usable, skipped = [], []
    for spec in specs:
        if spec.is_raw:
            usable.append(spec)
            continue
        try:
            import_class(spec.path)
        except (ImportError, AttributeError) as exc:
            if explicit:
                raise SystemExit(f"layer {spec.name}: cannot import {spec.path}: {exc}") from exc
            logger.warning("layer %s skipped: cannot import %s: %s", spec.name, spec.path, exc)
            skipped.append(spec.name)
            continue
        usable.append(spec)
    return usable, skipped


def run_scenario(ctx: Ctx, name: str, scenario: Scenario, spec: LayerSpec) -> list[Measurement]:
    """One scenario for one layer; a failure becomes an error row instead of ending the run."""
    ctx.flush()
    started = time.monotonic()
    try:
        results = scenario(ctx, spec)
    except JobError as exc:
        ctx.pool.reset()
        logger.error("%s [%s] failed: %s", name, spec.name, exc)
        return [ctx.measurement(spec, name, ERROR, None, error=str(exc).splitlines()[0])]
    for m in results:
        logger.info(
            "round %d %-15s %-26s %-8s %s %s lost=%d dup=%d ooo=%d",
            ctx.round,
            m.scenario,
            m.metric,
            m.layer,
            f"{m.value:,.3f}" if m.value is not None else "-",
            m.unit,
            m.lost,
            m.duplicated,
            m.out_of_order,
        )
    logger.debug("%s [%s] took %.1f s", name, spec.name, time.monotonic() - started)
    return results


def run_redis_benchmark(ctx: Ctx, port: int, raw_spec: LayerSpec) -> list[Measurement]:
    """``redis-benchmark -t set,get -q`` against the bench server."""
    ctx.flush()
    results = raw.redis_benchmark(port, ctx.sizes.redis_benchmark_requests)
    return [
        ctx.measurement(raw_spec, REDIS_BENCHMARK, Metric(test, "req/s", "higher"), rps)
        for test, rps in results.items()
    ]


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; return the exit status."""
    if "--soak" in (sys.argv[1:] if argv is None else argv):  # the soak mode: bench/soak.py
        return soak.main([a for a in (sys.argv[1:] if argv is None else argv) if a != "--soak"])
    args = parse_args(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(message)s",
        datefmt="%H:%M:%S",
        stream=sys.stderr,
    )
    sizes = Sizes.smoke() if args.smoke else Sizes()
    rounds = args.rounds or (1 if args.smoke else 3)
    only = [name.strip() for name in args.only.split(",") if name.strip()] or [
        *SCENARIOS,
        REDIS_BENCHMARK,
    ]
    unknown = set(only) - {*SCENARIOS, REDIS_BENCHMARK}
    if unknown:
        raise SystemExit(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    specs, skipped = available(
        parse_layers(args.layers), explicit=args.layers != ",".join(DEFAULT_LAYERS)
    )
    raw_spec = next((spec for spec in specs if spec.is_raw), None)
    command = "python -m bench " + shlex.join(sys.argv[1:] if argv is None else argv)
    measurements: list[Measurement] = []
    pool_size = max(max(sizes.worker_consumers) + 1, fanout.PROCESSES + 1)
    with RedisServer() as server:
        admin = redis.Redis.from_url(server.url)
        pool = Pool(pool_size, pin=args.pin)
        ctx = Ctx(url=server.url, pool=pool, sizes=sizes, admin=admin)
        try:
            for round_number in range(1, rounds + 1):
                ctx.round = round_number
                for name in only:
                    if name == REDIS_BENCHMARK:
                        if raw_spec is not None:
                            measurements += run_redis_benchmark(ctx, server.port, raw_spec)
                        continue
                    for spec in specs:
                        measurements += run_scenario(ctx, name, SCENARIOS[name], spec)
            redis_version = admin.info("server")["redis_version"]
        finally:
            pool.close()
            admin.close()
    rows = summarize(measurements)
    meta: dict[str, Any] = {
        "command": command,
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "rounds": rounds,
        "redis_version": redis_version,
        "cpus": os.cpu_count(),
        "pinned": args.pin,
        "layers": {spec.name: spec.path for spec in specs},
        "skipped_layers": skipped,
        "sizes": dataclasses.asdict(sizes),
    }
    sys.stdout.write(text_table(rows) + "\n")
    sys.stdout.write(RATIO_NOTE + "\n")
    if args.json:
        write_json(args.json, meta, measurements, rows)
    if args.markdown:
        write_markdown(args.markdown, meta, rows)
    problems = violations(rows, {spec.name for spec in specs if spec.strict})
    for problem in problems:
        sys.stdout.write(f"VIOLATION {problem}\n")
    if args.smoke and (problems or skipped):
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
