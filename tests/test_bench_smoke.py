"""The benchmark still runs, and streams_layer loses and duplicates nothing in it.

Runs ``python -m bench --smoke`` as a subprocess (it starts its own Redis)
and reads the JSON it writes. Timings are not asserted: benchmarks are not
timed tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from bench.pool import Control, Pool

REPO = Path(__file__).resolve().parent.parent
SMOKE_TIMEOUT_S = 110
EXPECTED_SCENARIOS = {
    "p2p-2proc",
    "p2p-1proc",
    "concurrent-32",
    "worker-K1",
    "worker-K2",
    "fanout-M10",
    "fanout-M100",
    "burst-M20",
    "pingpong",
    "backlog-memory",
    "backlog-expiry",
}


def test_bench_smoke_has_no_lost_or_duplicated_streams_messages(tmp_path: Path) -> None:
    out = tmp_path / "bench.json"
    completed = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke", "--json", str(out)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=SMOKE_TIMEOUT_S,
        check=False,
    )
    assert completed.returncode == 0, completed.stdout[-4000:] + completed.stderr[-4000:]
    document = json.loads(out.read_text())
    streams = [row for row in document["summary"] if row["layer"] == "streams"]
    assert {row["scenario"] for row in streams} >= EXPECTED_SCENARIOS
    bad: list[dict[str, Any]] = [
        row for row in streams if row["lost"] or row["duplicated"] or row["errors"]
    ]
    assert bad == []
    assert all(row["median"] is not None for row in streams), streams
    assert all(row["expected"] > 0 for row in streams if row["unit"] != "s")
    keys_left = next(
        row for row in streams if row["scenario"] == "backlog-expiry" and row["unit"] == "keys"
    )
    assert keys_left["median"] == 0


async def report_cpus(ctl: Control) -> dict[str, Any]:
    """A pool job: the CPUs its helper process may run on."""
    return {"cpus": sorted(os.sched_getaffinity(0))}


def test_pinned_pool_runs_each_helper_on_one_cpu_of_its_own() -> None:
    cpus = sorted(os.sched_getaffinity(0))
    pool = Pool(3, pin=True)
    try:
        jobs = [pool.start(report_cpus) for _ in range(3)]
        seen = [job.result(SMOKE_TIMEOUT_S)["cpus"] for job in jobs]
    finally:
        pool.close()
    assert seen == [[cpus[i % len(cpus)]] for i in range(3)]


def test_unpinned_pool_leaves_the_affinity_alone() -> None:
    pool = Pool(1)
    try:
        seen = pool.start(report_cpus).result(SMOKE_TIMEOUT_S)["cpus"]
    finally:
        pool.close()
    assert seen == sorted(os.sched_getaffinity(0))
