"""``python -m bench --soak [--minutes N]``: churn for N minutes, watch memory stay flat.

One process drives several layer instances ("server processes") on a Redis
server of its own:

- websocket-like channels are created (``new_channel`` + ``group_add`` to a
  few rooms), receive for a few seconds, then either leave properly
  (``group_discard``) or are abandoned (never read again, memberships left
  to lapse after ``group_expiry``);
- ``group_send`` to the rooms and direct ``send`` to live channels;
- normal-channel traffic: a producer sends to ``statistic``, read by a team
  of two members (acknowledged, at-least-once reads), and to ``jobs``, read
  with ``receive()`` by the same two instances (default team); one-off
  normal channels are written once and never read;
- every ``replace_every_s`` one "server process" is replaced by a new layer
  instance: the old one is closed with its inbox, counts hash and
  memberships left behind, as after a crash.

Every ``sample_s`` it records Redis ``used_memory``, the number of keys, and
this process's RSS. Flatness criterion (stated in the report): after the
first third (warm-up), the mean of the last third must be within
``FLAT_TOLERANCE`` of the mean of the middle third (plus a small absolute
slack for tiny values). Keys of an abandoned layer instance or channel must
be gone ``key_ttl + group_expiry + slack`` seconds after their last write;
at the end all traffic stops, every layer closes, and the whole prefix must
be empty after the same bound.

Writes ``docs/soak.csv`` and ``docs/soak.svg`` (a hand-drawn SVG plot) by
default; exits 1 when a criterion fails.
"""

from __future__ import annotations

import argparse
import asyncio
import csv
import logging
import random
import signal
import sys
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import redis.asyncio

from devtools.redis_servers import RedisServer
from streams_layer import ChannelFull, RedisStreamsChannelLayer, StreamsLayerError
from streams_layer.config import KEY_TTL_MARGIN_S

logger = logging.getLogger("bench.soak")

DOCS = Path(__file__).resolve().parent.parent / "docs"
PREFIX = "soak"
EXPIRY_S = 5
GROUP_EXPIRY_S = 15
PROCESSES = 3
ROOMS = 20
ROOMS_PER_CONNECTION = 2
CONNECTIONS_PER_S = 40
LIFETIME_S = (1.0, 8.0)
ABANDON_SHARE = 0.3
GROUP_SENDS_PER_S = 100
DIRECT_SENDS_PER_S = 100
STATISTIC_SENDS_PER_S = 100
JOBS_PER_S = 20
ONE_OFF_CHANNELS_PER_S = 5
REPLACE_EVERY_S = 30.0
SAMPLE_S = 3.0
TICK_S = 0.1
# Flatness: mean of the last third within 10 % of the middle third ...
FLAT_TOLERANCE = 0.10
# ... plus this absolute slack, so that a few KiB on a small figure do not fail it.
FLAT_SLACK_BYTES = 512 * 1024
FLAT_SLACK_KEYS = 20
# Abandoned keys must be gone this long after their last write (beyond TTLs).
GONE_SLACK_S = 5.0
PAGE_SIZE = 4096
SVG_W, SVG_H = 900, 620
FRAME = 'fill="none" stroke="#999"'


@dataclass
class Sample:
    """One row of the CSV."""

    t_s: float
    used_memory: int
    keys: int
    rss: int
    live_channels: int
    sent: int
    received: int


@dataclass
class Soak:
    """The state of one soak run."""

    url: str
    duration_s: float
    started: float = field(default_factory=time.monotonic)
    layers: list[RedisStreamsChannelLayer] = field(default_factory=list)
    # client_id of a replaced layer -> monotonic time of its abandonment
    dead_clients: dict[str, float] = field(default_factory=dict)
    one_off: dict[str, float] = field(default_factory=dict)
    live: list[tuple[RedisStreamsChannelLayer, str]] = field(default_factory=list)
    counts: Counter[str] = field(default_factory=Counter)
    samples: list[Sample] = field(default_factory=list)
    late_keys: list[str] = field(default_factory=list)
    tasks: set[asyncio.Task[Any]] = field(default_factory=set)
    # the connection tasks of each layer instance, cancelled when it is replaced
    by_layer: dict[int, set[asyncio.Task[Any]]] = field(default_factory=dict)

    def new_layer(self) -> RedisStreamsChannelLayer:
        return RedisStreamsChannelLayer(
            hosts=[self.url],
            prefix=PREFIX,
            expiry=EXPIRY_S,
            group_expiry=GROUP_EXPIRY_S,
        )

    def spawn(self, coro: Awaitable[Any], owner: RedisStreamsChannelLayer | None = None) -> None:
        task = asyncio.ensure_future(coro)
        self.tasks.add(task)
        task.add_done_callback(self._done)
        if owner is not None:
            owned = self.by_layer.setdefault(id(owner), set())
            owned.add(task)
            task.add_done_callback(owned.discard)

    def _done(self, task: asyncio.Task[Any]) -> None:
        self.tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            self.counts["task_errors"] += 1
            logger.warning("task failed: %r", task.exception())

    @property
    def elapsed_s(self) -> float:
        return time.monotonic() - self.started

    @property
    def running(self) -> bool:
        return self.elapsed_s < self.duration_s


def rss_bytes() -> int:
    """This process's resident set size, from /proc."""
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * PAGE_SIZE


async def guarded(
    soak: Soak, name: str, operation: Callable[..., Awaitable[Any]], *args: Any
) -> bool:
    """Run ``operation(*args)``; count it as ``name``, or ChannelFull / errors, never raise."""
    try:
        await operation(*args)
    except ChannelFull:
        soak.counts[f"{name}_full"] += 1
        return False
    except StreamsLayerError as exc:
        soak.counts[f"{name}_error"] += 1
        logger.warning("%s failed: %r", name, exc)
        return False
    soak.counts[name] += 1
    return True


async def connection(soak: Soak, layer: RedisStreamsChannelLayer) -> None:
    """A websocket-like consumer: join rooms, receive, then leave or vanish."""
    channel = await layer.new_channel()
    rooms = random.sample(range(ROOMS), ROOMS_PER_CONNECTION)
    for room in rooms:
        await guarded(soak, "group_add", layer.group_add, f"room{room}", channel)
    entry = (layer, channel)
    soak.live.append(entry)
    deadline = time.monotonic() + random.uniform(*LIFETIME_S)
    try:
        while (left := deadline - time.monotonic()) > 0:
            try:
                await asyncio.wait_for(layer.receive(channel), left)
            except TimeoutError:
                break
            soak.counts["received"] += 1
    finally:
        soak.live.remove(entry)
    if layer not in soak.layers:
        return
    if random.random() < ABANDON_SHARE:
        soak.counts["abandoned"] += 1
        return
    for room in rooms:
        await guarded(soak, "group_discard", layer.group_discard, f"room{room}", channel)


async def every(soak: Soak, per_s: float, action: Callable[[], Awaitable[Any]]) -> None:
    """Call ``action`` ``per_s`` times a second (in batches per tick) while the soak runs."""
    owed = 0.0
    last = time.monotonic()
    while soak.running:
        now = time.monotonic()
        owed += per_s * (now - last)
        last = now
        batch = int(owed)
        owed -= batch
        if batch:
            await asyncio.gather(*(action() for _ in range(batch)))
        await asyncio.sleep(TICK_S)


async def team_member(soak: Soak, layer: RedisStreamsChannelLayer, name: str) -> None:
    """A member of the ``stats`` team on the ``statistic`` channel (acknowledged reads)."""
    while soak.running:
        try:
            async with layer.consume("statistic", team="stats", consumer=name) as team:
                stopper = asyncio.get_running_loop().call_later(
                    max(soak.duration_s - soak.elapsed_s, 0.0), team.stop
                )
                try:
                    async for delivery in team:
                        async with delivery:
                            soak.counts["statistic_handled"] += 1
                finally:
                    stopper.cancel()
        except StreamsLayerError as exc:
            soak.counts["team_error"] += 1
            logger.warning("team member %s: %r", name, exc)
            await asyncio.sleep(0.5)


async def jobs_reader(soak: Soak, layer: RedisStreamsChannelLayer) -> None:
    """A ``receive()`` loop on the ``jobs`` normal channel (default team, at most once)."""
    while soak.running:
        try:
            await asyncio.wait_for(layer.receive("jobs"), 1.0)
        except TimeoutError:
            continue
        soak.counts["jobs_received"] += 1


async def churn(soak: Soak) -> None:
    """All the traffic, until the duration is over."""
    soak.layers = [soak.new_layer() for _ in range(PROCESSES)]
    readers = [soak.new_layer() for _ in range(2)]
    producer = soak.new_layer()

    async def connect() -> None:
        layer = random.choice(soak.layers)
        soak.spawn(connection(soak, layer), owner=layer)

    async def group_send() -> None:
        await guarded(
            soak,
            "group_sent",
            lambda: random.choice(soak.layers).group_send(
                f"room{random.randrange(ROOMS)}", {"type": "chat.message", "text": "x" * 100}
            ),
        )

    async def direct_send() -> None:
        if not soak.live:
            return
        _, channel = random.choice(soak.live)
        await guarded(soak, "sent", lambda: producer.send(channel, {"type": "direct", "n": 1}))

    async def statistic() -> None:
        await guarded(
            soak,
            "statistic_sent",
            lambda: producer.send("statistic", {"type": "stat", "path": "/"}),
        )

    async def jobs() -> None:
        await guarded(soak, "jobs_sent", lambda: producer.send("jobs", {"type": "job"}))

    async def one_off() -> None:
        name = f"oneoff.{random.getrandbits(64):x}"
        await guarded(soak, "one_off", lambda: producer.send(name, {"type": "once"}))
        soak.one_off[name] = time.monotonic()

    async def replace() -> None:
        next_at = REPLACE_EVERY_S
        while soak.running:
            await asyncio.sleep(TICK_S)
            if soak.elapsed_s < next_at:
                continue
            next_at += REPLACE_EVERY_S
            index = random.randrange(len(soak.layers))
            old, soak.layers[index] = soak.layers[index], soak.new_layer()
            # The old instance "crashes": its connections stop, nothing is discarded.
            owned = soak.by_layer.pop(id(old), set())
            for task in owned:
                task.cancel()
            await asyncio.gather(*owned, return_exceptions=True)
            await old.close()
            soak.dead_clients[old.client_id] = time.monotonic()
            soak.counts["replaced"] += 1

    for index, reader in enumerate(readers):
        soak.spawn(team_member(soak, reader, f"member-{index}"))
        soak.spawn(jobs_reader(soak, reader))
    await asyncio.gather(
        every(soak, CONNECTIONS_PER_S, connect),
        every(soak, GROUP_SENDS_PER_S, group_send),
        every(soak, DIRECT_SENDS_PER_S, direct_send),
        every(soak, STATISTIC_SENDS_PER_S, statistic),
        every(soak, JOBS_PER_S, jobs),
        every(soak, ONE_OFF_CHANNELS_PER_S, one_off),
        replace(),
    )
    stopping = time.monotonic()
    for task in list(soak.tasks):
        task.cancel()
    await asyncio.gather(*soak.tasks, return_exceptions=True)
    for layer in [*soak.layers, *readers, producer]:
        await layer.close()
    soak.counts["close_ms"] = int((time.monotonic() - stopping) * 1000)


def gone_bound_s() -> float:
    """Seconds after its last write by which an abandoned key must be gone."""
    # Group members keep receiving (refreshing the inbox TTL) until their
    # membership lapses after group_expiry; then the key TTL runs out.
    return GROUP_EXPIRY_S + EXPIRY_S + KEY_TTL_MARGIN_S + GONE_SLACK_S


async def late_keys(soak: Soak, admin: redis.asyncio.Redis) -> list[str]:
    """Keys of abandoned layers and one-off channels that outlived :func:`gone_bound_s`."""
    now = time.monotonic()
    late = []
    for client_id, since in list(soak.dead_clients.items()):
        if now - since < gone_bound_s():
            continue
        for key in (f"{PREFIX}:inbox:{{{client_id}}}", f"{PREFIX}:inbox:{{{client_id}}}:n"):
            if await admin.exists(key):
                late.append(key)
        del soak.dead_clients[client_id]
    for name, since in list(soak.one_off.items()):
        if now - since < EXPIRY_S + KEY_TTL_MARGIN_S + GONE_SLACK_S:
            continue
        key = f"{PREFIX}:chan:{{{name}}}"
        if await admin.exists(key):
            late.append(key)
        del soak.one_off[name]
    return late


async def sampler(soak: Soak, admin: redis.asyncio.Redis) -> None:
    """Record one :class:`Sample` every ``SAMPLE_S`` and check abandoned keys."""
    while soak.running:
        info = await admin.info("memory")
        soak.samples.append(
            Sample(
                t_s=round(soak.elapsed_s, 1),
                used_memory=int(info["used_memory"]),
                keys=int(await admin.dbsize()),
                rss=rss_bytes(),
                live_channels=len(soak.live),
                sent=sum(
                    soak.counts[k] for k in ("group_sent", "sent", "statistic_sent", "jobs_sent")
                ),
                received=sum(
                    soak.counts[k] for k in ("received", "statistic_handled", "jobs_received")
                ),
            )
        )
        soak.late_keys += await late_keys(soak, admin)
        await asyncio.sleep(SAMPLE_S)


def flatness(values: list[int], slack: float) -> tuple[float, float, bool]:
    """Means of the middle and last thirds, and whether the last is within tolerance."""
    third = len(values) // 3
    middle = values[third : 2 * third]
    last = values[2 * third :]
    middle_mean = sum(middle) / max(len(middle), 1)
    last_mean = sum(last) / max(len(last), 1)
    return middle_mean, last_mean, last_mean <= middle_mean * (1 + FLAT_TOLERANCE) + slack


async def drain_check(admin: redis.asyncio.Redis) -> tuple[int, float, list[bytes]]:
    """After everything closed: keys at first, seconds until the prefix is empty, what is left."""
    started = time.monotonic()
    at_close = len([key async for key in admin.scan_iter(match=f"{PREFIX}:*", count=1000)])
    left: list[bytes] = []
    while time.monotonic() - started < gone_bound_s():
        left = [key async for key in admin.scan_iter(match=f"{PREFIX}:*", count=1000)]
        if not left:
            break
        await asyncio.sleep(0.5)
    return at_close, time.monotonic() - started, left


def write_csv(path: Path, samples: list[Sample]) -> None:
    """The samples as CSV."""
    with path.open("w", newline="") as out:
        writer = csv.writer(out)
        writer.writerow(Sample.__dataclass_fields__)
        for s in samples:
            writer.writerow(
                [s.t_s, s.used_memory, s.keys, s.rss, s.live_channels, s.sent, s.received]
            )


def _polyline(points: list[tuple[float, float]], box: tuple[float, float, float, float]) -> str:
    x0, y0, w, h = box
    xs = [p[0] for p in points] or [0.0]
    ys = [p[1] for p in points] or [0.0]
    x_max = max(*xs, 1e-9)
    y_max = max(*ys, 1e-9) * 1.1
    return " ".join(f"{x0 + x / x_max * w:.1f},{y0 + h - y / y_max * h:.1f}" for x, y in points)


def write_svg(path: Path, samples: list[Sample], title: str) -> None:
    """Three panels (Redis used_memory, process RSS, key count) against time."""
    panels = [
        ("Redis used_memory (MiB)", [s.used_memory / 2**20 for s in samples], "#1f77b4"),
        ("process RSS (MiB)", [s.rss / 2**20 for s in samples], "#d62728"),
        ("keys in Redis", [float(s.keys) for s in samples], "#2ca02c"),
    ]
    times = [s.t_s / 60 for s in samples]
    parts = [
        (
            f'<svg xmlns="http://www.w3.org/2000/svg" width="{SVG_W}" height="{SVG_H}" '
            'font-family="sans-serif" font-size="12">'
        ),
        f'<rect width="{SVG_W}" height="{SVG_H}" fill="white"/>',
        f'<text x="{SVG_W / 2}" y="20" text-anchor="middle" font-size="14">{title}</text>',
    ]
    left, width, height, gap, top = 80.0, SVG_W - 110.0, 150.0, 45.0, 40.0
    for index, (label, values, colour) in enumerate(panels):
        y = top + index * (height + gap)
        peak = max(values or [0.0]) * 1.1 or 1.0
        parts += [
            f'<rect x="{left}" y="{y}" width="{width}" height="{height}" {FRAME}/>',
            f'<text x="{left}" y="{y - 5}">{label}</text>',
            f'<text x="{left - 5}" y="{y + 10}" text-anchor="end">{peak:.1f}</text>',
            f'<text x="{left - 5}" y="{y + height}" text-anchor="end">0</text>',
        ]
        for third in (1, 2):
            x = left + width * third / 3
            parts.append(
                f'<line x1="{x:.1f}" y1="{y}" x2="{x:.1f}" y2="{y + height}" '
                'stroke="#ccc" stroke-dasharray="4 4"/>'
            )
        points = list(zip(times, values, strict=True))
        parts.append(
            f'<polyline fill="none" stroke="{colour}" stroke-width="1.5" '
            f'points="{_polyline(points, (left, y, width, height))}"/>'
        )
    minutes = times[-1] if times else 0.0
    bottom = top + 3 * (height + gap) - gap + 18
    parts += [
        f'<text x="{left}" y="{bottom}">0 min</text>',
        f'<text x="{left + width}" y="{bottom}" text-anchor="end">{minutes:.1f} min</text>',
        (
            f'<text x="{left + width / 2}" y="{bottom}" text-anchor="middle">'
            "time (dashed: thirds; flatness compares the last third with the middle one)</text>"
        ),
        "</svg>",
    ]
    path.write_text("\n".join(parts) + "\n")


async def run(url: str, minutes: float, out_dir: Path) -> int:
    """The whole soak against the Redis at ``url``; returns the exit status."""
    soak = Soak(url=url, duration_s=minutes * 60)
    admin = redis.asyncio.Redis.from_url(url)
    try:
        sampling = asyncio.ensure_future(sampler(soak, admin))
        await churn(soak)
        await sampling
        at_close, drain_s, left = await drain_check(admin)
    finally:
        await admin.aclose()
    await asyncio.to_thread(out_dir.mkdir, parents=True, exist_ok=True)
    write_csv(out_dir / "soak.csv", soak.samples)
    write_svg(
        out_dir / "soak.svg",
        soak.samples,
        f"streams_layer soak: {minutes:g} min churn, expiry {EXPIRY_S} s",
    )
    checks = {
        "redis used_memory": flatness([s.used_memory for s in soak.samples], FLAT_SLACK_BYTES),
        "process rss": flatness([s.rss for s in soak.samples], FLAT_SLACK_BYTES),
        "redis keys": flatness([s.keys for s in soak.samples], FLAT_SLACK_KEYS),
    }
    failed = False
    out = sys.stdout
    out.write(f"soak: {minutes:g} min, {len(soak.samples)} samples every {SAMPLE_S:g} s\n")
    out.write("counters: " + ", ".join(f"{k}={v}" for k, v in sorted(soak.counts.items())) + "\n")
    seconds = max(minutes * 60, 1e-9)
    rates = ("group_sent", "sent", "statistic_sent", "jobs_sent", "received", "statistic_handled")
    out.write("per second: " + ", ".join(f"{k} {soak.counts[k] / seconds:.0f}" for k in rates))
    out.write(f", connections {soak.counts['group_add'] / ROOMS_PER_CONNECTION / seconds:.0f}\n")
    for name, (middle, last, ok) in checks.items():
        change = (last / middle - 1) * 100 if middle else 0.0
        verdict = "flat" if ok else "GROWING"
        out.write(
            f"{name}: middle third mean {middle:,.0f}, last third mean {last:,.0f} "
            f"({change:+.1f} %) -> {verdict}\n"
        )
        failed |= not ok
    out.write(f"abandoned keys outliving {gone_bound_s():g} s: {len(soak.late_keys)}\n")
    for key in soak.late_keys[:10]:
        out.write(f"  {key}\n")
    out.write(
        f"after closing everything: {at_close} keys; the prefix was empty after {drain_s:.1f} s"
    )
    out.write(f"; keys left: {len(left)}\n" if left else "\n")
    failed |= bool(soak.late_keys) or bool(left) or soak.counts["task_errors"] > 0
    out.write("RESULT: " + ("FAIL" if failed else "PASS") + "\n")
    return 1 if failed else 0


def _exit_on_signal(signum: int, frame: Any) -> None:
    del frame
    raise SystemExit(128 + signum)


def main(argv: list[str] | None = None) -> int:
    """Command line of the soak mode."""
    parser = argparse.ArgumentParser(prog="python -m bench --soak", description=__doc__)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--out", type=Path, default=DOCS, help="directory for soak.csv/.svg")
    args = parser.parse_args(argv)
    # A plain `kill` must still stop the Redis server this process started.
    signal.signal(signal.SIGTERM, _exit_on_signal)
    logging.basicConfig(level=logging.WARNING, format="%(asctime)s %(name)s %(message)s")
    with RedisServer() as server:
        return asyncio.run(run(server.url, args.minutes, args.out))


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
