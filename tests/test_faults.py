"""Fault injection: Redis killed, connections dropped, Redis frozen, during traffic.

A :class:`Traffic` runs three flows at once on a private Redis server
(``own_redis``): ``send`` to a process-specific channel, ``group_send`` to a
group that channel belongs to, and ``send``/``receive`` on a normal channel.
Every message carries its flow and a sequence number.

For each fault the test records, per flow, the messages received before the
fault and the messages whose ``send`` had returned once the fault was in
effect. Messages of the second set not in the first were *in flight*. After
the layer recovers by itself (no new layer, no process restart), what was
lost must be a subset of what was in flight, every message sent after
recovery must arrive, and nothing may arrive twice (at most once). The
losses are printed (``pytest -s`` or ``-rP`` shows them).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import redis.asyncio

from bench import soak
from devtools.redis_servers import RedisServer
from streams_layer.exceptions import StreamsLayerError
from streams_layer.scripts import LOAD_ALL
from tests.layer_helpers import LayerFactory

FLOWS = ("specific", "group", "normal")
GROUP = "faults-room"
NORMAL = "faults.normal"
SEND_GAP_S = 0.01
RECOVER_S = 15.0
SETTLE_S = 10.0
BACKLOG_S = 0.3
GRACE_S = 0.5
# What a caller may see while Redis is away.
TYPED_ERRORS = (StreamsLayerError, ConnectionError, TimeoutError)


@dataclass
class Flow:
    """Bookkeeping of one flow."""

    sent: list[int] = field(default_factory=list)
    received: list[int] = field(default_factory=list)
    failed_sends: int = 0
    next_n: int = 0


@dataclass
class FaultRecord:
    name: str
    in_flight: dict[str, set[int]]
    lost: dict[str, set[int]] = field(default_factory=dict)
    recovery_s: float = 0.0


class Traffic:
    """Three flows of numbered messages between two layer instances."""

    def __init__(self, owner: Any, sender: Any) -> None:
        self.owner = owner
        self.sender = sender
        self.channel = ""
        self.flows = {name: Flow() for name in FLOWS}
        self.member = asyncio.Event()
        self.receiving = asyncio.Event()
        self.receiving.set()
        self.stop = asyncio.Event()
        self.untyped: list[BaseException] = []
        self.tasks: list[asyncio.Task[None]] = []
        # messages already counted as lost by an earlier fault
        self.written_off: dict[str, set[int]] = {name: set() for name in FLOWS}

    async def start(self) -> None:
        self.channel = await self.owner.new_channel()
        await self.owner.group_add(GROUP, self.channel)
        self.member.set()
        self.tasks = [
            asyncio.ensure_future(self._send_loop("specific")),
            asyncio.ensure_future(self._send_loop("group")),
            asyncio.ensure_future(self._send_loop("normal")),
            asyncio.ensure_future(self._receive_loop(self.channel)),
            asyncio.ensure_future(self._receive_loop(NORMAL)),
        ]

    async def aclose(self) -> None:
        self.stop.set()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)

    def _send(self, flow: str, message: dict[str, Any]) -> Awaitable[None]:
        if flow == "specific":
            return self.sender.send(self.channel, message)  # type: ignore[no-any-return]
        if flow == "group":
            return self.sender.group_send(GROUP, message)  # type: ignore[no-any-return]
        return self.sender.send(NORMAL, message)  # type: ignore[no-any-return]

    async def _send_loop(self, flow: str) -> None:
        state = self.flows[flow]
        while not self.stop.is_set():
            if flow == "group" and not self.member.is_set():
                # After a restart the membership is gone until re-added; a group_send
                # to an empty group reaches nobody and proves nothing.
                await asyncio.sleep(SEND_GAP_S)
                continue
            n = state.next_n
            state.next_n += 1
            try:
                await asyncio.wait_for(self._send(flow, {"type": "t", "flow": flow, "n": n}), 12)
            except TYPED_ERRORS:
                state.failed_sends += 1
            except Exception as exc:  # noqa: BLE001 - collected and failed on below
                self.untyped.append(exc)
            else:
                state.sent.append(n)
            await asyncio.sleep(SEND_GAP_S)

    async def _receive_loop(self, channel: str) -> None:
        while not self.stop.is_set():
            await self.receiving.wait()
            try:
                message = await asyncio.wait_for(self.owner.receive(channel), 0.5)
            except TimeoutError:
                continue
            except TYPED_ERRORS:
                await asyncio.sleep(0.05)
                continue
            except Exception as exc:  # noqa: BLE001 - collected and failed on below
                self.untyped.append(exc)
                await asyncio.sleep(0.05)
                continue
            self.flows[message["flow"]].received.append(int(message["n"]))

    def received_sets(self) -> dict[str, set[int]]:
        return {name: set(flow.received) for name, flow in self.flows.items()}

    def sent_sets(self) -> dict[str, set[int]]:
        return {name: set(flow.sent) for name, flow in self.flows.items()}

    async def wait_received(self, wanted: dict[str, set[int]], limit_s: float) -> None:
        """Until every message of ``wanted`` has arrived, or ``limit_s`` passed."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + limit_s
        while loop.time() < deadline:
            got = self.received_sets()
            if all(wanted[name] <= got[name] for name in FLOWS):
                return
            await asyncio.sleep(0.05)


async def _until_works(operation: Callable[[], Awaitable[Any]], limit_s: float) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit_s
    while True:
        try:
            await asyncio.wait_for(operation(), 3)
        except TYPED_ERRORS:
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.1)
        else:
            return


async def inject(
    traffic: Traffic,
    name: str,
    fault: Callable[[], Awaitable[None]],
    heal: Callable[[], Awaitable[None]],
    *,
    data_lost: bool,
) -> FaultRecord:
    """Run one fault and check recovery; returns what was in flight and what was lost."""
    loop = asyncio.get_running_loop()
    # Hold the receivers back for a moment so that a backlog is in flight when
    # the fault strikes; they run again (against the faulty Redis) right after.
    traffic.receiving.clear()
    await asyncio.sleep(BACKLOG_S)
    received_before = traffic.received_sets()
    await fault()
    sent_during = traffic.sent_sets()
    traffic.receiving.set()
    if data_lost:
        traffic.member.clear()
    record = FaultRecord(
        name=name,
        in_flight={n: sent_during[n] - received_before[n] - traffic.written_off[n] for n in FLOWS},
    )
    healed_at = loop.time()
    await heal()
    # Recovery: the same layer objects work again within a bounded time.
    if data_lost:
        await _until_works(lambda: traffic.owner.group_add(GROUP, traffic.channel), RECOVER_S)
        traffic.member.set()
    mark = {name: traffic.flows[name].next_n for name in FLOWS}
    while any(not [n for n in traffic.flows[f].received if n >= mark[f]] for f in FLOWS):
        assert loop.time() - healed_at < RECOVER_S, (
            f"{name}: no message of every flow arrived within {RECOVER_S} s of the repair"
        )
        await asyncio.sleep(0.05)
    record.recovery_s = loop.time() - healed_at
    # Each flow is FIFO and a message sent after the repair has arrived, so an
    # older message still missing now will not come; a short grace covers the
    # receive loop's own bookkeeping.
    await traffic.wait_received(sent_during, GRACE_S)
    got = traffic.received_sets()
    record.lost = {n: record.in_flight[n] - got[n] for n in FLOWS}
    for n in FLOWS:
        traffic.written_off[n] |= record.lost[n]
    return record


def check(traffic: Traffic, records: list[FaultRecord]) -> None:
    """Losses within in-flight sets, everything after the last fault arrived, no duplicates."""
    for record in records:
        print(
            f"{record.name}: recovered in {record.recovery_s:.2f} s; "
            + "; ".join(
                f"{flow} lost {len(record.lost[flow])} of {len(record.in_flight[flow])} in flight"
                for flow in FLOWS
            )
        )
        for name in FLOWS:
            assert record.lost[name] <= record.in_flight[name], (record.name, name)
    for name, state in traffic.flows.items():
        assert len(state.received) == len(set(state.received)), f"{name}: delivered twice"
        assert set(state.received) <= set(range(state.next_n)), name
        print(
            f"{name}: sent {len(state.sent)}, failed sends {state.failed_sends}, "
            f"received {len(state.received)}"
        )
    assert traffic.untyped == []


@pytest.fixture
async def traffic(own_redis: RedisServer, prefix: str) -> AsyncIterator[Traffic]:
    factory = LayerFactory([own_redis.url], prefix)
    running = Traffic(owner=factory(), sender=factory())
    await running.start()
    try:
        yield running
    finally:
        await running.aclose()
        with contextlib.suppress(*TYPED_ERRORS):
            await asyncio.wait_for(factory.aclose(), 15)


async def _final_round(traffic: Traffic) -> None:
    """After the last fault, a stretch of traffic arrives in full."""
    start = traffic.sent_sets()
    await asyncio.sleep(1.0)
    later = {name: traffic.sent_sets()[name] - start[name] for name in FLOWS}
    assert all(later[name] for name in FLOWS), "traffic did not resume"
    await traffic.wait_received(later, SETTLE_S)
    got = traffic.received_sets()
    assert {name: later[name] - got[name] for name in FLOWS} == {name: set() for name in FLOWS}


async def test_redis_killed_and_restarted_repeatedly_during_traffic(
    own_redis: RedisServer, traffic: Traffic
) -> None:
    records = []
    for round_no in range(3):
        await asyncio.sleep(0.7)

        async def crash() -> None:
            await asyncio.to_thread(own_redis.kill)

        async def start() -> None:
            await asyncio.sleep(0.3)
            await asyncio.to_thread(own_redis.start)

        records.append(await inject(traffic, f"kill #{round_no + 1}", crash, start, data_lost=True))
    await _final_round(traffic)
    check(traffic, records)


async def test_client_kill_of_every_connection_during_traffic(
    own_redis: RedisServer, traffic: Traffic
) -> None:
    admin = redis.asyncio.Redis.from_url(own_redis.url)
    records = []
    try:
        for round_no in range(3):
            await asyncio.sleep(0.7)

            async def drop() -> None:
                killed = await admin.client_kill_filter(_type="normal")
                assert int(killed) > 0

            async def nothing() -> None:
                return None

            records.append(
                await inject(
                    traffic, f"CLIENT KILL #{round_no + 1}", drop, nothing, data_lost=False
                )
            )
    finally:
        await admin.aclose()
    await _final_round(traffic)
    check(traffic, records)


async def test_redis_paused_longer_than_the_block_time(
    own_redis: RedisServer, traffic: Traffic
) -> None:
    block_s = traffic.owner.config.block_ms / 1000
    await asyncio.sleep(0.7)

    async def freeze() -> None:
        await asyncio.to_thread(own_redis.pause)
        await asyncio.sleep(block_s + 1.0)

    async def thaw() -> None:
        await asyncio.to_thread(own_redis.resume)

    record = await inject(traffic, f"SIGSTOP {block_s + 1:.0f} s", freeze, thaw, data_lost=False)
    await _final_round(traffic)
    check(traffic, [record])


async def test_capacity_is_given_back_after_dropped_connections(
    own_redis: RedisServer, prefix: str
) -> None:
    capacity = 50
    factory = LayerFactory([own_redis.url], prefix)
    admin = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        owner, sender = factory(capacity=capacity), factory(capacity=capacity)
        channel = await owner.new_channel()
        received: list[int] = []

        async def consume() -> None:
            while True:
                try:
                    received.append((await owner.receive(channel))["n"])
                except TYPED_ERRORS:
                    await asyncio.sleep(0.01)

        consumer = asyncio.ensure_future(consume())
        sent = 0
        for n in range(2000):
            with contextlib.suppress(*TYPED_ERRORS):
                await sender.send(channel, {"type": "x", "n": n})
                sent += 1
            if n % 50 == 25:
                await admin.client_kill_filter(_type="normal")
        await asyncio.sleep(1.0)
        consumer.cancel()
        await asyncio.gather(consumer, return_exceptions=True)
        print(f"sent {sent}, received {len(received)}")
        # Nothing is queued any more, so the channel takes `capacity` new messages.
        for n in range(capacity):
            await sender.send(channel, {"type": "after", "n": n})
    finally:
        await admin.aclose()
        with contextlib.suppress(*TYPED_ERRORS):
            await asyncio.wait_for(factory.aclose(), 15)


# -- teams (at least once) ----------------------------------------------------------------


@pytest.fixture
def durable_redis() -> Iterator[RedisServer]:
    """A private Redis that writes every command to its AOF, so a SIGKILL loses no data."""
    with RedisServer(extra_args=("--appendonly", "yes", "--appendfsync", "always")) as server:
        yield server


async def test_team_loses_nothing_across_crashes_connection_drops_and_a_freeze(
    durable_redis: RedisServer, prefix: str
) -> None:
    factory = LayerFactory([durable_redis.url], prefix)
    producer = factory()
    members = [factory(), factory()]
    sent: list[int] = []
    handled: list[int] = []
    stop = asyncio.Event()

    async def produce() -> None:
        n = 0
        while not stop.is_set():
            try:
                await asyncio.wait_for(producer.send("faults.team", {"type": "job", "n": n}), 12)
            except TYPED_ERRORS:
                pass  # outcome unknown: it may or may not be handled
            else:
                sent.append(n)
            n += 1
            await asyncio.sleep(SEND_GAP_S)

    async def member(layer: Any, name: str) -> None:
        while not stop.is_set():
            try:
                async with layer.consume(
                    "faults.team", team="workers", consumer=name, claim_idle_ms=1000
                ) as team:
                    async for delivery in team:
                        async with delivery:
                            handled.append(int(delivery.message["n"]))
            except TYPED_ERRORS:
                await asyncio.sleep(0.1)  # opening or closing met the fault: join again

    tasks = [asyncio.ensure_future(produce())]
    tasks += [asyncio.ensure_future(member(m, f"m{i}")) for i, m in enumerate(members)]
    try:
        faults = [
            ("crash", durable_redis.kill, durable_redis.start),
            ("CLIENT KILL", None, None),
            ("freeze", durable_redis.pause, durable_redis.resume),
            ("crash", durable_redis.kill, durable_redis.start),
            ("CLIENT KILL", None, None),
        ]
        for name, fault, heal in faults:
            await asyncio.sleep(1.0)
            if fault is None:
                # A fresh connection: one opened before a crash would be dead by now.
                admin = redis.asyncio.Redis.from_url(durable_redis.url)
                try:
                    await admin.client_kill_filter(_type="normal")
                finally:
                    await admin.aclose()
            else:
                await asyncio.to_thread(fault)
                await asyncio.sleep(3.0 if name == "freeze" else 0.3)
                assert heal is not None
                await asyncio.to_thread(heal)
        await asyncio.sleep(1.0)
        stop.set()
        # Everything sent must be handled, by claims of stale entries if need be.
        for _ in range(int(RECOVER_S / 0.1)):
            if set(sent) <= set(handled):
                break
            await asyncio.sleep(0.1)
        missing = sorted(set(sent) - set(handled))
        duplicates = len(handled) - len(set(handled))
        print(
            f"team: sent {len(sent)}, handled {len(set(handled))} distinct, "
            f"{duplicates} redelivered, missing {len(missing)}"
        )
        assert missing == []
    finally:
        stop.set()
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        with contextlib.suppress(*TYPED_ERRORS):
            await asyncio.wait_for(factory.aclose(), 15)


# -- soak smoke ---------------------------------------------------------------------------


@pytest.mark.slow
async def test_soak_smoke_leaves_no_keys_behind(
    own_redis: RedisServer, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Half a minute is too short for the flatness verdict (still warming up),
    # but long enough for replaced instances and abandoned channels to expire.
    await soak.run(own_redis.url, 0.5, tmp_path)
    out = capsys.readouterr().out
    assert "abandoned keys outliving" in out
    assert ": 0\n" in out.split("abandoned keys outliving", 1)[1]
    assert "keys left" not in out
    rows = (tmp_path / "soak.csv").read_text().splitlines()
    assert len(rows) > 5
    assert (tmp_path / "soak.svg").read_text().startswith("<svg")


async def test_a_restarted_redis_gets_the_scripts_before_the_first_batch_needs_them(
    own_redis: RedisServer,
) -> None:
    """A new or restarted Redis has no scripts cached. Were a batch refused with
    NOSCRIPT, its scripts would run again after the commands that followed them
    in it (a reordering); the batcher loads every script first on a new connection."""
    layer = LayerFactory([own_redis.url], "noscript")()
    admin = redis.asyncio.Redis.from_url(own_redis.url)
    try:
        receiver = await layer.new_channel()
        for _ in range(3):
            await layer.send(receiver, {"type": "before"})  # a new Redis: nothing cached either
        assert "errorstat_NOSCRIPT" not in await admin.info("errorstats")
        # Loaded once per socket, not with every batch.
        loads = (await admin.info("commandstats"))["cmdstat_script|load"]["calls"]
        assert loads == len(LOAD_ALL)
        await asyncio.to_thread(own_redis.restart)
        await admin.connection_pool.disconnect()  # its connection died with the server
        for _ in range(20):  # the first write may still meet the old socket
            try:
                await layer.send(receiver, {"type": "after"})
                break
            except StreamsLayerError:
                await asyncio.sleep(0.1)
        else:
            pytest.fail("no send succeeded after the restart")
        errors = await admin.info("errorstats")
        assert "errorstat_NOSCRIPT" not in errors, errors
    finally:
        await admin.aclose()
        await layer.close()
