"""Teams across real processes: a worker killed with SIGKILL, Redis restarted mid-run.

Each worker is this module run as a script (see :func:`main`): a team member
that appends the number of every message it handles to its own log file
(one ``os.write`` per message, so the lines survive SIGKILL) before
acknowledging it. The parent counts the lines.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from devtools.redis_servers import RedisServer
from devtools.redis_topologies import sync_client
from streams_layer import RedisStreamsChannelLayer
from streams_layer.keys import KeySpace

ROOT = Path(__file__).resolve().parent.parent
CHANNEL = "jobs"
TEAM = "workers"
WAIT_S = 90.0
EXIT_WAIT_S = 15.0

pytestmark = pytest.mark.slow


class Worker:
    """One worker process and its log of handled message numbers."""

    def __init__(  # noqa: PLR0913 - the worker's settings
        self,
        url: str,
        prefix: str,
        name: str,
        log: Path,
        *,
        claim_idle_ms: int,
        delay_s: float,
    ) -> None:
        self.name = name
        self.log = log
        env = dict(os.environ, PYTHONPATH=str(ROOT))
        self.process = subprocess.Popen(
            [
                sys.executable,
                str(Path(__file__)),
                url,
                prefix,
                name,
                str(log),
                "--claim-idle-ms",
                str(claim_idle_ms),
                "--delay-s",
                str(delay_s),
            ],
            cwd=ROOT,
            env=env,
            stderr=subprocess.PIPE,
        )

    def handled(self) -> list[int]:
        try:
            text = self.log.read_text()
        except FileNotFoundError:
            return []
        return [int(line) for line in text.splitlines() if line]

    def stop(self) -> int:
        """SIGTERM, and the exit code (the worker shuts down gracefully)."""
        self.process.send_signal(signal.SIGTERM)
        _out, err = self.process.communicate(timeout=EXIT_WAIT_S)
        if self.process.returncode != 0:
            sys.stderr.write(err.decode(errors="replace"))
        return self.process.returncode

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
        self.process.communicate(timeout=EXIT_WAIT_S)


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    try:
        yield started
    finally:
        for worker in started:
            worker.kill()


async def send_numbers(url: str, prefix: str, count: int) -> None:
    layer = RedisStreamsChannelLayer(hosts=[url], prefix=prefix, capacity=count * 2)
    try:
        for start in range(0, count, 500):
            await asyncio.gather(
                *(
                    layer.send(CHANNEL, {"type": "job", "n": n})
                    for n in range(start, min(start + 500, count))
                )
            )
    finally:
        await layer.close()


def wait_until(condition: object, timeout_s: float = WAIT_S) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            pytest.fail("condition not reached in time")
        time.sleep(0.02)


def consumer_pending(client: redis.Redis, key: str, consumer: str) -> int:
    for info in client.xinfo_consumers(key, TEAM):
        if info["name"].decode() == consumer:
            return int(info["pending"])
    return 0


def team_pending(client: redis.Redis, key: str) -> int:
    return int(client.xpending(key, TEAM)["pending"])


async def test_sigkilled_worker_loses_nothing_and_duplicates_only_its_unacknowledged(
    redis_url: str, prefix: str, tmp_path: Path, workers: list[Worker]
) -> None:
    total = 10_000
    await send_numbers(redis_url, prefix, total)
    key = KeySpace(prefix).channel(CHANNEL)
    client = sync_client(redis_url)  # a RedisCluster under --topology=cluster
    victim, survivor = (
        Worker(
            redis_url, prefix, name, tmp_path / f"{name}.log", claim_idle_ms=1000, delay_s=0.0003
        )
        for name in ("victim", "survivor")
    )
    workers.extend([victim, survivor])
    wait_until(lambda: len(victim.handled()) + len(survivor.handled()) >= total * 0.4)
    victim.process.kill()
    victim.process.wait()
    # What the victim read but had not acknowledged when it died, from Redis itself.
    unacked_at_kill = consumer_pending(client, key, "victim")
    handled_by_victim = len(victim.handled())

    wait_until(lambda: len(set(victim.handled()) | set(survivor.handled())) == total)
    wait_until(lambda: team_pending(client, key) == 0)
    assert survivor.stop() == 0
    counts = Counter(victim.handled() + survivor.handled())
    duplicates = sum(counts.values()) - len(counts)
    print(
        f"\nSIGKILL run: messages={total} handled_by_victim={handled_by_victim} "
        f"handled_by_survivor={len(survivor.handled())} "
        f"victim_unacknowledged_at_kill={unacked_at_kill} duplicates={duplicates}"
    )
    assert set(counts) == set(range(total))
    assert duplicates <= unacked_at_kill
    # A duplicate can only be a message the victim handled but never acknowledged.
    assert {n for n, c in counts.items() if c > 1} <= set(victim.handled())
    assert client.xlen(key) == 0
    client.close()


async def test_workers_ride_out_a_redis_restart(tmp_path: Path, workers: list[Worker]) -> None:
    total = 3000
    prefix = "restart"
    # Append-only file, fsync on every write: the restarted server keeps its data.
    with RedisServer(extra_args=("--appendonly", "yes", "--appendfsync", "always")) as server:
        await send_numbers(server.url, prefix, total)
        key = KeySpace(prefix).channel(CHANNEL)
        pair = [
            Worker(
                server.url,
                prefix,
                name,
                tmp_path / f"{name}.log",
                claim_idle_ms=5000,
                delay_s=0.002,
            )
            for name in ("w1", "w2")
        ]
        workers.extend(pair)

        def handled() -> list[int]:
            return pair[0].handled() + pair[1].handled()

        wait_until(lambda: len(handled()) >= total // 3)
        server.restart()
        at_restart = len(handled())
        wait_until(lambda: len(set(handled())) == total)
        client = redis.Redis.from_url(server.url)
        wait_until(lambda: team_pending(client, key) == 0)
        assert all(w.process.poll() is None for w in pair), "a worker exited"
        assert [w.stop() for w in pair] == [0, 0]
        counts = Counter(handled())
        duplicates = sum(counts.values()) - len(counts)
        print(
            f"\nrestart run: messages={total} handled_before_restart={at_restart} "
            f"handled_total={sum(counts.values())} duplicates={duplicates}"
        )
        assert set(counts) == set(range(total))
        # Acknowledged before the restart stays acknowledged: nothing is handled twice.
        assert duplicates == 0
        assert client.xlen(key) == 0
        client.close()


# -- the worker process ------------------------------------------------------


async def _work(args: argparse.Namespace) -> None:
    layer = RedisStreamsChannelLayer(hosts=[args.url], prefix=args.prefix, capacity=100_000)
    log = os.open(args.log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        async with layer.consume(
            CHANNEL,
            team=TEAM,
            consumer=args.name,
            batch=50,
            claim_idle_ms=args.claim_idle_ms,
        ) as team:
            loop = asyncio.get_running_loop()
            loop.add_signal_handler(signal.SIGTERM, team.stop)
            async for delivery in team:
                os.write(log, f"{delivery.message['n']}\n".encode())
                if args.delay_s:
                    await asyncio.sleep(args.delay_s)
                await delivery.ack()
    finally:
        os.close(log)
        await layer.close()


def main() -> None:
    """Run one team member until SIGTERM (see the module docstring)."""
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("prefix")
    parser.add_argument("name")
    parser.add_argument("log")
    parser.add_argument("--claim-idle-ms", type=int, required=True)
    parser.add_argument("--delay-s", type=float, default=0.0)
    asyncio.run(_work(parser.parse_args()))


if __name__ == "__main__":
    main()
