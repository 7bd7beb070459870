"""The recorded group messages extension: group_send_recorded and group_history."""

from __future__ import annotations

import re
import time
from typing import Any

import pytest
import redis.asyncio

from streams_layer.exceptions import MessageTooLarge, StreamsLayerError
from tests.layer_helpers import LayerFactory, receive_within, receives_nothing

STREAM_ID = re.compile(r"^\d+-\d+$")


def _key(history_id: str) -> tuple[int, int]:
    ms, seq = history_id.split("-")
    return int(ms), int(seq)


async def _record(layer: Any, group: str, count: int, start: int = 0) -> list[str]:
    return [
        await layer.group_send_recorded(group, {"type": "chat.message", "n": n})
        for n in range(start, start + count)
    ]


async def test_recorded_message_reaches_members_with_its_history_id(
    make_layer: LayerFactory,
) -> None:
    owner, other = make_layer(), make_layer()
    local, remote = await owner.new_channel(), await other.new_channel()
    await owner.group_add("room", local)
    await owner.group_add("room", remote)
    await owner.group_add("room", "room.normal")
    history_id = await owner.group_send_recorded("room", {"type": "chat.message", "text": "hi"})
    assert isinstance(history_id, str)
    assert STREAM_ID.match(history_id), history_id
    expected = {"type": "chat.message", "text": "hi", "history_id": history_id}
    assert await receive_within(owner, local) == expected
    assert await receive_within(other, remote) == expected
    assert await receive_within(owner, "room.normal") == expected
    assert await receives_nothing(owner, local, 0.2)


async def test_history_ids_increase(make_layer: LayerFactory) -> None:
    layer = make_layer()
    ids = await _record(layer, "room", 10)
    assert [_key(i) for i in ids] == sorted(_key(i) for i in ids)
    assert len(set(ids)) == 10


async def test_group_history_returns_recorded_messages_oldest_first(
    make_layer: LayerFactory,
) -> None:
    layer = make_layer()
    ids = await _record(layer, "room", 5)
    await layer.group_send("room", {"type": "not.recorded"})
    history = await make_layer().group_history("room")
    assert history.complete is True
    assert [m["history_id"] for m in history.messages] == ids
    assert [m["n"] for m in history.messages] == [0, 1, 2, 3, 4]
    assert all(m["type"] == "chat.message" for m in history.messages)


async def test_group_history_after_returns_only_later_messages(make_layer: LayerFactory) -> None:
    layer = make_layer()
    ids = await _record(layer, "room", 6)
    history = await layer.group_history("room", after=ids[2])
    assert [m["history_id"] for m in history.messages] == ids[3:]
    assert history.complete is True
    latest = await layer.group_history("room", after=ids[-1])
    assert latest.messages == []
    assert latest.complete is True


async def test_group_history_limit_pages_forward(make_layer: LayerFactory) -> None:
    layer = make_layer()
    ids = await _record(layer, "room", 7)
    page = await layer.group_history("room", after=ids[0], limit=2)
    assert [m["history_id"] for m in page.messages] == ids[1:3]
    unbounded = await layer.group_history("room", limit=3)
    got = [m["history_id"] for m in unbounded.messages]
    assert len(got) == 3
    assert got == sorted(got, key=_key)
    assert set(got) <= set(ids)


async def test_history_keeps_only_the_last_history_size_messages(
    make_layer: LayerFactory,
) -> None:
    layer = make_layer(history_size=5)
    ids = await _record(layer, "room", 8)
    history = await layer.group_history("room", limit=100)
    assert [m["history_id"] for m in history.messages] == ids[3:]


async def test_history_is_incomplete_when_after_was_trimmed(make_layer: LayerFactory) -> None:
    layer = make_layer(history_size=3)
    ids = await _record(layer, "room", 6)
    gap = await layer.group_history("room", after=ids[0])
    assert gap.complete is False
    assert [m["history_id"] for m in gap.messages] == ids[3:]
    no_gap = await layer.group_history("room", after=ids[2])
    assert no_gap.complete is True
    assert [m["history_id"] for m in no_gap.messages] == ids[3:]


async def test_group_without_history_is_empty_and_complete(make_layer: LayerFactory) -> None:
    history = await make_layer().group_history("silent")
    assert history.messages == []
    assert history.complete is True


async def test_histories_of_groups_are_separate(make_layer: LayerFactory) -> None:
    layer = make_layer()
    first = await _record(layer, "first", 2)
    second = await _record(layer, "second", 3, start=10)
    assert [m["history_id"] for m in (await layer.group_history("first")).messages] == first
    assert [m["n"] for m in (await layer.group_history("second")).messages] == [10, 11, 12]
    assert second


async def test_recorded_message_values_round_trip(make_layer: LayerFactory) -> None:
    layer = make_layer()
    message = {"type": "chat.message", "text": "ünïcode ✓", "data": b"\x00\x01", "n": 2**40}
    await layer.group_send_recorded("room", message)
    (recorded,) = (await layer.group_history("room")).messages
    assert {k: v for k, v in recorded.items() if k != "history_id"} == message


async def test_group_send_recorded_validates_like_group_send(make_layer: LayerFactory) -> None:
    layer = make_layer()
    with pytest.raises(TypeError):
        await layer.group_send_recorded("bad group", {"type": "x"})
    with pytest.raises(TypeError):
        await layer.group_send_recorded("room", ["not", "a", "dict"])
    with pytest.raises(TypeError):
        await layer.group_history("bad group")
    assert (await layer.group_history("room")).messages == []


async def test_a_message_too_large_with_its_history_id_is_refused_before_it_is_recorded(
    make_layer: LayerFactory,
) -> None:
    layer = make_layer(max_message_bytes=1000)
    channel = await layer.new_channel()
    await layer.group_add("room", channel)
    small = {"type": "x", "text": ""}
    room = 1000 - len(layer.codec.encode(small))
    fits_alone = {"type": "x", "text": "a" * (room - 5)}  # not with a history_id added
    layer.codec.encode(fits_alone)
    with pytest.raises(MessageTooLarge):
        await layer.group_send_recorded("room", fits_alone)
    assert (await layer.group_history("room")).messages == []
    assert await receives_nothing(layer, channel)


async def test_encrypted_history_stays_readable_after_expiry(
    make_layer: LayerFactory, redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    """Recorded messages live for group_expiry; an encrypted one used to be
    refused once older than expiry + 10 s (Fernet's age check)."""
    layer = make_layer(expiry=1, symmetric_encryption_keys=["history-key"])
    serializer: Any = layer._history_codec._serializer
    written_at = int(time.time()) - 120  # two minutes ago, as Fernet stamps it
    token = serializer.crypter.encrypt_at_time(serializer.as_bytes({"type": "old"}), written_at)
    await redis_client.xadd(layer.keys.history("room"), {"m": token})
    (message,) = (await layer.group_history("room")).messages
    assert message["type"] == "old"


async def test_group_history_over_garbage_fails_typed_or_reports_a_gap(
    make_layer: LayerFactory, redis_client: redis.asyncio.Redis
) -> None:
    layer = make_layer()
    await redis_client.set(layer.keys.history("strings"), "not a stream")
    with pytest.raises(StreamsLayerError):
        await layer.group_history("strings")
    history_id = await layer.group_send_recorded("marked", {"type": "x"})
    await redis_client.set(layer.keys.history_trimmed("marked"), "garbage")
    history = await layer.group_history("marked", after="0-0")
    assert [m["history_id"] for m in history.messages] == [history_id]
    assert history.complete is False
