"""The metrics hook and the Prometheus export, fed by a real layer on a real Redis."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterator, Mapping

import prometheus_client
import pytest

from streams_layer import ChannelFull, RedisStreamsChannelLayer, metrics

CLAIM_IDLE_MS = 200


class Recorder:
    """An observer that sums every event per (event, channel, team)."""

    def __init__(self) -> None:
        self.counts: Counter[tuple[str, str, str]] = Counter()

    def __call__(self, event: str, count: int, labels: Mapping[str, str]) -> None:
        self.counts[event, labels["channel"], labels.get("team", "")] += count


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    observer = Recorder()
    metrics.add_observer(observer)
    try:
        yield observer
    finally:
        metrics.remove_observer(observer)


async def test_send_receive_full_and_expired_are_counted(
    redis_url: str, prefix: str, recorder: Recorder
) -> None:
    layer = RedisStreamsChannelLayer(hosts=[redis_url], prefix=prefix, capacity=2, expiry=1)
    before = metrics.snapshot()
    try:
        await layer.send("plain", {"type": "a"})
        await layer.send("plain", {"type": "b"})
        with pytest.raises(ChannelFull):
            await layer.send("plain", {"type": "c"})
        assert await layer.receive("plain") == {"type": "a"}
        specific = await layer.new_channel()
        await layer.send(specific, {"type": "d"})
        assert await layer.receive(specific) == {"type": "d"}
        await layer.send(specific, {"type": "late"})
        await asyncio.sleep(1.2)  # older than expiry: never delivered
        await layer.send(specific, {"type": "fresh"})
        assert await layer.receive(specific) == {"type": "fresh"}
    finally:
        await layer.close()
    assert recorder.counts["sent", "plain", ""] == 2
    assert recorder.counts["channel_full", "plain", ""] == 1
    assert recorder.counts["received", "plain", ""] == 1
    assert recorder.counts["sent", "specific", ""] == 3
    assert recorder.counts["received", "specific", ""] == 2
    assert recorder.counts["expired", "specific", ""] == 1
    after = metrics.snapshot()
    assert after["sent"] - before["sent"] >= 5
    assert set(after) == set(metrics.EVENTS)


async def test_team_events_are_counted_and_exported_to_prometheus(
    redis_url: str, prefix: str, recorder: Recorder
) -> None:
    registry = prometheus_client.CollectorRegistry()
    exporter = metrics.enable_prometheus(registry)
    layer = RedisStreamsChannelLayer(hosts=[redis_url], prefix=prefix)
    try:
        for n in range(3):
            await layer.send("jobs", {"type": "job", "n": n})
        dying = layer.consume("jobs", team="t", consumer="dying", claim_idle_ms=CLAIM_IDLE_MS)
        await dying.__aenter__()
        held = [await dying.__anext__() for _ in range(3)]
        await held[0].ack()  # the other two are left to be claimed
        async with layer.consume(
            "jobs", team="t", consumer="live", claim_idle_ms=CLAIM_IDLE_MS, max_deliveries=2
        ) as team:
            claimed = [await asyncio.wait_for(team.__anext__(), 10) for _ in range(2)]
            await claimed[0].ack()
            await claimed[1].fail("no")  # second delivery of max 2: dead letter
    finally:
        exporter.disable()
        await layer.close()
    team_counts = {
        event: recorder.counts[event, "jobs", "t"]
        for event in ("received", "acknowledged", "claimed", "dead_lettered")
    }
    assert team_counts == {"received": 5, "acknowledged": 2, "claimed": 2, "dead_lettered": 1}
    labels = {"channel": "jobs", "team": "t"}
    for event, value in team_counts.items():
        sample = registry.get_sample_value(f"streams_layer_{event}_total", labels)
        assert sample == value
    assert (
        registry.get_sample_value("streams_layer_sent_total", {"channel": "jobs", "team": ""}) == 3
    )


def test_unknown_event_and_failing_observer(caplog: pytest.LogCaptureFixture) -> None:
    with pytest.raises(ValueError, match="unknown metrics event"):
        metrics.record("nonsense", channel="x")

    def broken(event: str, count: int, labels: Mapping[str, str]) -> None:
        raise RuntimeError("exporter down")

    metrics.add_observer(broken)
    try:
        metrics.record(metrics.SENT, channel="x")  # does not raise
    finally:
        metrics.remove_observer(broken)
    assert "metrics observer" in caplog.text
