"""The raw ceilings: redis-py (asyncio + hiredis) on bare streams, no layer.

* ``seq``: one task awaiting each XADD in turn, read by a blocking XREAD in
  another process (the most a sequential sender can get through Redis).
* ``coalesced``: 32 tasks whose XADDs one flusher batches into pipelines.
* ``pingpong``: two processes, XADD to the peer's stream, blocking XREAD on one's own.
* ``redis-benchmark``: the server's own tool, SET/GET.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import shutil
import subprocess
from typing import Any

import msgpack
import redis.asyncio

from bench.messages import MSG_TYPE, Tracker, bench_message, now, percentile
from bench.pool import Control

STREAM = "bench:raw"
PING_STREAM = "bench:raw:ping"
PONG_STREAM = "bench:raw:pong"
READ_COUNT = 1000
LINGER_S = 0.3
REDIS_BENCHMARK_TIMEOUT_S = 120.0
RPS = re.compile(r"^(?P<test>[A-Z]+): (?P<rps>[\d.]+) requests per second")


Entry = tuple[bytes, dict[bytes, bytes]]


def _entries(reply: Any) -> list[Entry]:
    """The entries of an XREAD reply over one stream (RESP2 list form)."""
    if not reply:
        return []
    entries: list[Entry] = reply[0][1]
    return entries


def _client(url: str) -> redis.asyncio.Redis:
    return redis.asyncio.Redis.from_url(url)


def _pack(message: dict[str, Any]) -> bytes:
    return msgpack.packb(message)  # type: ignore[no-any-return]


async def _read_into(
    client: redis.asyncio.Redis, tracker: Tracker, *, n: int, idle_s: float, deadline: float
) -> float | None:
    last_id = b"0-0"
    complete_t: float | None = None
    while now() < deadline:
        wait_s = idle_s if complete_t is None else complete_t + LINGER_S - now()
        if wait_s <= 0:
            break
        reply = await client.xread(
            {STREAM: last_id}, count=READ_COUNT, block=max(1, int(wait_s * 1000))
        )
        if not reply:
            break
        for entry_id, fields in _entries(reply):
            last_id = entry_id
            message = msgpack.unpackb(fields[b"m"])
            if message.get("type") != MSG_TYPE or not tracker.add(message["s"], message["q"]):
                continue
            if tracker.unique >= n and complete_t is None:
                complete_t = now()
    return complete_t


async def reader_job(
    ctl: Control, *, url: str, n: int, idle_s: float, deadline_s: float
) -> dict[str, Any]:
    """Blocking XREAD of ``n`` entries from the raw stream."""
    client = _client(url)
    try:
        await client.ping()
        ctl.info(channel=STREAM)
        tracker = Tracker()
        complete_t = await _read_into(
            client, tracker, n=n, idle_s=idle_s, deadline=now() + deadline_s
        )
    finally:
        await client.aclose()
    return {**tracker.summary(), "complete_t": complete_t}


async def seq_sender_job(ctl: Control, *, url: str, n: int) -> dict[str, Any]:
    """One task, one XADD awaited at a time."""
    client = _client(url)
    try:
        await client.ping()
        t0 = now()
        for seq in range(n):
            await client.xadd(STREAM, {"m": _pack(bench_message(0, seq))})
        t_end = now()
    finally:
        await client.aclose()
    return {"t0": t0, "t_end": t_end, "full": 0, "failed": 0}


class Coalescer:
    """Collects XADDs from many tasks; one flusher sends all pending in one pipeline."""

    def __init__(self, client: redis.asyncio.Redis) -> None:
        self._client = client
        self._pending: list[tuple[bytes, asyncio.Future[None]]] = []
        self._wake = asyncio.Event()
        self._task = asyncio.ensure_future(self._flusher())
        self.round_trips = 0

    async def xadd(self, payload: bytes) -> None:
        """Queue one XADD and wait until its pipeline has been executed."""
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((payload, future))
        self._wake.set()
        await future

    async def _flusher(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            batch, self._pending = self._pending, []
            if not batch:
                continue
            pipe = self._client.pipeline(transaction=False)
            for payload, _ in batch:
                pipe.xadd(STREAM, {"m": payload})
            try:
                await pipe.execute()
            except redis.RedisError as exc:
                for _, future in batch:
                    future.set_exception(exc)
                continue
            self.round_trips += 1
            for _, future in batch:
                future.set_result(None)

    async def close(self) -> None:
        """Stop the flusher."""
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task


async def coalesced_sender_job(ctl: Control, *, url: str, n: int, tasks: int) -> dict[str, Any]:
    """``tasks`` tasks each awaiting its XADDs in turn, coalesced into pipelines."""
    client = _client(url)
    coalescer = Coalescer(client)

    async def sender(sender_id: int, count: int) -> None:
        for seq in range(count):
            await coalescer.xadd(_pack(bench_message(sender_id, seq)))

    try:
        await client.ping()
        shares = [n // tasks + (1 if k < n % tasks else 0) for k in range(tasks)]
        t0 = now()
        await asyncio.gather(*(sender(k, share) for k, share in enumerate(shares)))
        t_end = now()
        await coalescer.close()
    finally:
        await client.aclose()
    return {"t0": t0, "t_end": t_end, "full": 0, "failed": 0, "round_trips": coalescer.round_trips}


async def local_job(
    ctl: Control, *, url: str, n: int, idle_s: float, deadline_s: float
) -> dict[str, Any]:
    """Sequential XADDs and a blocking XREAD task in one process (two connections)."""
    sender_client, reader_client = _client(url), _client(url)
    try:
        await sender_client.ping()
        await reader_client.ping()
        tracker = Tracker()
        reading = asyncio.ensure_future(
            _read_into(reader_client, tracker, n=n, idle_s=idle_s, deadline=now() + deadline_s)
        )
        t0 = now()
        for seq in range(n):
            await sender_client.xadd(STREAM, {"m": _pack(bench_message(0, seq))})
        complete_t = await reading
    finally:
        await sender_client.aclose()
        await reader_client.aclose()
    return {**tracker.summary(), "complete_t": complete_t, "t0": t0}


async def ponger_job(ctl: Control, *, url: str, n: int, idle_s: float) -> dict[str, Any]:
    """Answer each ping entry with a pong entry."""
    client = _client(url)
    answered = 0
    last_id = b"0-0"
    try:
        await client.ping()
        ctl.info(channel=PING_STREAM)
        while answered < n:
            reply = await client.xread(
                {PING_STREAM: last_id}, count=READ_COUNT, block=int(idle_s * 1000)
            )
            if not reply:
                break
            for entry_id, fields in _entries(reply):
                last_id = entry_id
                await client.xadd(PONG_STREAM, {"q": fields[b"q"]})
                answered += 1
    finally:
        await client.aclose()
    return {"answered": answered}


async def pinger_job(
    ctl: Control, *, url: str, n: int, warmup: int, idle_s: float
) -> dict[str, Any]:
    """``warmup`` + ``n`` round trips; RTT percentiles in milliseconds."""
    client = _client(url)
    rtts: list[float] = []
    lost = 0
    last_id = b"0-0"
    try:
        await client.ping()
        for seq in range(warmup + n):
            t0 = now()
            await client.xadd(PING_STREAM, {"q": seq})
            reply = await client.xread({PONG_STREAM: last_id}, count=1, block=int(idle_s * 1000))
            if not reply:
                lost += 1
                continue
            last_id = _entries(reply)[0][0]
            if seq >= warmup:
                rtts.append((now() - t0) * 1000)
    finally:
        await client.aclose()
    return latency_summary(rtts, lost)


def latency_summary(rtts: list[float], lost: int) -> dict[str, Any]:
    """RTT percentiles (nearest rank) and the count of round trips without an answer."""
    return {
        "p50": percentile(rtts, 0.50),
        "p99": percentile(rtts, 0.99),
        "p999": percentile(rtts, 0.999),
        "count": len(rtts),
        "lost": lost,
    }


def redis_benchmark(url_port: int, requests: int) -> dict[str, float]:
    """``redis-benchmark -t set,get -q``: requests per second per test ({} if absent)."""
    binary = shutil.which("redis-benchmark")
    if binary is None:
        return {}
    completed = subprocess.run(
        [
            binary,
            "-h",
            "127.0.0.1",
            "-p",
            str(url_port),
            "-t",
            "set,get",
            "-n",
            str(requests),
            "-q",
        ],
        capture_output=True,
        text=True,
        timeout=REDIS_BENCHMARK_TIMEOUT_S,
        check=False,
    )
    results: dict[str, float] = {}
    for line in completed.stdout.replace("\r", "\n").splitlines():
        match = RPS.match(line.strip())
        if match:
            results[match["test"]] = float(match["rps"])
    return results
