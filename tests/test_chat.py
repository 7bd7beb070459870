"""The chat: room pages, and the websocket consumer on the real layer and a real Redis."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import Client
from pytest_django.fixtures import Settings as SettingsWrapper

from chat.protocol import REF_MAX, ClientFrame, FrameError, StreamId, parse_client_frame
from chat.ratelimit import TokenBucket
from chat.rooms import group_name
from devtools.redis_servers import RedisServer
from project import settings as project_settings
from project.asgi import application
from streams_layer import RedisStreamsChannelLayer
from tests.layer_helpers import sample_channel_layers

# Channels consumers close stale database connections around every message,
# so the consumer tests need database access although the chat stores nothing.
consumer_db = pytest.mark.django_db(transaction=True)

ORIGIN = b"http://127.0.0.1"
FRAME_TIMEOUT_S = 5.0
QUIET_S = 0.3


@pytest.fixture
def chat_settings(settings: SettingsWrapper, redis_url: str, prefix: str) -> SettingsWrapper:
    """The real layer on the session's Redis; a generous rate limit unless a test lowers it."""
    settings.CHANNEL_LAYERS = sample_channel_layers(redis_url, prefix)
    settings.CHAT_RATE_LIMIT_PER_SECOND = 1000.0
    settings.CHAT_RATE_LIMIT_BURST = 1000
    return settings


@pytest.fixture
async def closing_layer(chat_settings: SettingsWrapper) -> AsyncIterator[None]:
    """Close the test's layer (and its connections) before the event loop goes away.

    A test may set its own ``settings.CHANNEL_LAYERS``: the layer closed is
    the one in use when it ends."""
    yield
    layer = get_channel_layer()
    if layer is not None:
        await layer.close()


class Member:
    """A websocket client in a room, collecting what it receives."""

    def __init__(self, communicator: WebsocketCommunicator) -> None:
        self.ws = communicator

    async def say(self, text: str) -> None:
        await self.ws.send_to(text_data=json.dumps({"message": text}))

    async def frame(self) -> dict[str, Any]:
        data = await self.ws.receive_json_from(timeout=FRAME_TIMEOUT_S)
        assert isinstance(data, dict)
        return data

    async def frames(self, count: int) -> list[dict[str, Any]]:
        return [await self.frame() for _ in range(count)]

    async def messages_until(self, wanted: int) -> list[dict[str, Any]]:
        """Chat message frames until ``wanted`` of them arrived, failing on anything else."""
        received: list[dict[str, Any]] = []
        while len(received) < wanted:
            frame = await self.frame()
            assert "message" in frame, frame
            received.append(frame)
        return received

    async def assert_quiet(self) -> None:
        assert await self.ws.receive_nothing(timeout=QUIET_S), "unexpected frame"

    async def leave(self) -> None:
        await self.ws.disconnect()


async def join(room: str, *, after: str | None = None, origin: bytes | None = ORIGIN) -> Member:
    path = f"/ws/{room}/" + (f"?after={after}" if after is not None else "")
    headers = [(b"origin", origin)] if origin is not None else []
    communicator = WebsocketCommunicator(application, path, headers=headers)
    connected, _ = await communicator.connect(timeout=FRAME_TIMEOUT_S)
    assert connected, f"could not connect to {path}"
    return Member(communicator)


async def say_and_collect(speaker: Member, texts: list[str]) -> list[dict[str, Any]]:
    """``speaker`` says each text and receives its own copy; returns those frames."""
    frames = []
    for text in texts:
        await speaker.say(text)
        frames.extend(await speaker.messages_until(1))
    return frames


# -- pure units -----------------------------------------------------------------


def test_stream_ids_compare_as_numbers_not_strings() -> None:
    assert StreamId.parse("10-0") > StreamId.parse("9-5")
    assert StreamId.parse("9-10") > StreamId.parse("9-9")
    assert str(StreamId.parse("1718000000000-3")) == "1718000000000-3"


@pytest.mark.parametrize(
    "text",
    [
        "",
        "12",
        "a-1",
        "1-",
        "-1",
        "1-2-3",
        "1 -2",
        "\u00b2-1",  # a digit to str.isdigit(), not to Redis
        "123456789012345678901-0",  # 21 digits
        "18446744073709551616-0",  # 2**64: beyond a stream ID
    ],
)
def test_stream_id_rejects_malformed_text(text: str) -> None:
    with pytest.raises(ValueError, match="stream ID"):
        StreamId.parse(text)


def test_token_bucket_allows_burst_then_refills_at_rate() -> None:
    now = [0.0]
    bucket = TokenBucket(rate_per_s=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.try_acquire() for _ in range(4)] == [True, True, True, False]
    now[0] += 0.5  # one token at 2/s
    assert [bucket.try_acquire() for _ in range(2)] == [True, False]
    now[0] += 100.0  # refills up to the burst only
    assert sum(bucket.try_acquire() for _ in range(10)) == 3


def test_message_limit_counts_utf8_bytes() -> None:
    frame = parse_client_frame(json.dumps({"message": "é" * 5}), max_message_bytes=10)
    assert frame == ClientFrame("é" * 5, None)
    with pytest.raises(ValueError, match="over the limit"):
        parse_client_frame(json.dumps({"message": "é" * 6}), max_message_bytes=10)


def test_a_refused_frame_carries_its_ref_once_readable() -> None:
    text = json.dumps({"message": "x" * 11, "ref": 7})
    with pytest.raises(FrameError, match="over the limit") as refused:
        parse_client_frame(text, max_message_bytes=10)
    assert refused.value.ref == 7
    ok = parse_client_frame(json.dumps({"message": "hi", "ref": REF_MAX}), max_message_bytes=10)
    assert ok == ClientFrame("hi", REF_MAX)


@pytest.mark.parametrize("ref", [True, -1, REF_MAX + 1, 1.5, "7", [7]], ids=repr)
def test_a_ref_that_is_not_a_small_non_negative_integer_is_refused(ref: Any) -> None:
    text = json.dumps({"message": "hi", "ref": ref})
    with pytest.raises(FrameError, match='"ref" must be') as refused:
        parse_client_frame(text, max_message_bytes=10)
    assert refused.value.ref is None


# -- room pages -----------------------------------------------------------------


@pytest.mark.usefixtures("chat_settings")
def test_room_page_has_log_input_and_submit() -> None:
    response = Client().get("/lobby-1.a_b/")
    assert response.status_code == 200
    html = response.content.decode()
    for element_id in ('id="log"', 'id="input"', 'id="submit"'):
        assert element_id in html
    assert "lobby-1.a_b" in html


@pytest.mark.usefixtures("chat_settings")
@pytest.mark.parametrize(
    "path", ["/a%20b/", "/<script>/", "/" + "a" * 81 + "/", "/caf%C3%A9/", "/a/b/", "/a%22/"]
)
def test_invalid_room_names_are_not_found(path: str) -> None:
    assert Client().get(path).status_code == 404


@pytest.mark.usefixtures("chat_settings")
def test_longest_room_name_is_accepted() -> None:
    assert Client().get("/" + "a" * 80 + "/").status_code == 200


# -- the consumer on the real layer ------------------------------------------------


@consumer_db
@pytest.mark.usefixtures("closing_layer")
async def test_two_clients_in_one_room_both_receive_each_message() -> None:
    alice, bob = await join("room1"), await join("room1")
    await alice.say("hello")
    (to_alice,) = await alice.messages_until(1)
    (to_bob,) = await bob.messages_until(1)
    assert to_alice == to_bob
    assert to_alice["message"] == "hello"
    StreamId.parse(to_alice["id"])
    assert to_alice["time"].endswith("Z")
    await bob.say("hi alice")
    assert (await alice.messages_until(1))[0]["message"] == "hi alice"
    await alice.assert_quiet()
    await alice.leave()
    await bob.leave()


@consumer_db
@pytest.mark.usefixtures("closing_layer")
async def test_two_rooms_are_isolated() -> None:
    alice, bob = await join("room-a"), await join("room-b")
    await alice.say("only for room a")
    assert (await alice.messages_until(1))[0]["message"] == "only for room a"
    await bob.assert_quiet()
    await alice.leave()
    await bob.leave()


@consumer_db
@pytest.mark.usefixtures("closing_layer")
async def test_joining_client_receives_recent_history_in_order() -> None:
    alice = await join("history")
    sent = await say_and_collect(alice, ["one", "two", "three"])
    carol = await join("history")
    received = await carol.messages_until(3)
    assert received == sent
    await carol.assert_quiet()
    await alice.leave()
    await carol.leave()


@consumer_db
@pytest.mark.usefixtures("closing_layer")
async def test_history_on_join_is_the_last_fifty() -> None:
    alice = await join("long")
    sent = await say_and_collect(alice, [f"m{n}" for n in range(55)])
    carol = await join("long")
    received = await carol.messages_until(50)
    assert [frame["message"] for frame in received] == [f"m{n}" for n in range(5, 55)]
    assert received == sent[5:]
    await carol.assert_quiet()
    await alice.leave()
    await carol.leave()


@consumer_db
@pytest.mark.usefixtures("closing_layer")
async def test_reconnecting_client_receives_exactly_the_missed_messages() -> None:
    alice, bob = await join("resume"), await join("resume")
    seen = await say_and_collect(alice, ["a", "b"])
    assert await bob.messages_until(2) == seen
    await bob.leave()
    missed = await say_and_collect(alice, ["c", "d", "e"])
    bob = await join("resume", after=seen[-1]["id"])
    assert await bob.messages_until(3) == missed
    await bob.assert_quiet()
    await alice.say("f")
    (live,) = await bob.messages_until(1)
    assert live["message"] == "f"
    await bob.assert_quiet()
    await alice.leave()
    await bob.leave()


@consumer_db
@pytest.mark.usefixtures("closing_layer")
async def test_resume_while_messages_keep_arriving_skips_none_and_repeats_none() -> None:
    alice = await join("busy")
    first = await say_and_collect(alice, ["before"])
    total = 30

    async def keep_talking() -> None:
        for number in range(total):
            await alice.say(f"n{number}")
            await asyncio.sleep(0.005)

    talking = asyncio.create_task(keep_talking())
    await asyncio.sleep(0.03)  # reconnect in the middle of the stream of messages
    bob = await join("busy", after=first[0]["id"])
    received = await bob.messages_until(total)
    await talking
    assert [frame["message"] for frame in received] == [f"n{n}" for n in range(total)]
    ids = [StreamId.parse(frame["id"]) for frame in received]
    assert ids == sorted(set(ids))
    await bob.assert_quiet()
    await alice.leave()
    await bob.leave()


@consumer_db
@pytest.mark.usefixtures("closing_layer")
async def test_resume_beyond_the_history_window_reports_a_gap(
    settings: SettingsWrapper, redis_url: str, prefix: str
) -> None:
    settings.CHANNEL_LAYERS = sample_channel_layers(redis_url, prefix, history_size=5)
    settings.CHAT_RATE_LIMIT_BURST = 100
    alice = await join("gap")
    sent = await say_and_collect(alice, [f"g{n}" for n in range(10)])
    bob = await join("gap", after=sent[0]["id"])
    gap = await bob.frame()
    assert gap.get("gap") is True
    assert "error" in gap
    assert await bob.messages_until(5) == sent[5:]
    await bob.assert_quiet()
    await alice.leave()
    await bob.leave()


@consumer_db
@pytest.mark.usefixtures("closing_layer")
async def test_invalid_after_is_reported_and_recent_history_sent() -> None:
    alice = await join("badafter")
    sent = await say_and_collect(alice, ["x"])
    bob = await join("badafter", after="yesterday")
    notice = await bob.frame()
    assert "error" in notice
    assert await bob.messages_until(1) == sent
    await alice.leave()
    await bob.leave()


BAD_FRAMES: list[tuple[str, dict[str, Any]]] = [
    ("invalid json", {"text_data": "{not json"}),
    ("missing message", {"text_data": json.dumps({"text": "hi"})}),
    ("non-string message", {"text_data": json.dumps({"message": 42})}),
    ("null message", {"text_data": json.dumps({"message": None})}),
    ("list instead of object", {"text_data": json.dumps(["hi"])}),
    ("empty message", {"text_data": json.dumps({"message": "   "})}),
    ("message over 4 KB", {"text_data": json.dumps({"message": "x" * 4097})}),
    ("huge frame", {"text_data": "x" * 100_000}),
    ("nested too deep", {"text_data": "[" * 16_000 + "]" * 16_000}),
    ("binary frame", {"bytes_data": b'{"message": "hi"}'}),
]


@consumer_db
@pytest.mark.usefixtures("closing_layer")
@pytest.mark.parametrize(("case", "frame"), BAD_FRAMES, ids=[case for case, _ in BAD_FRAMES])
async def test_bad_input_gets_an_error_frame_and_the_connection_stays_open(
    case: str, frame: dict[str, Any]
) -> None:
    alice, bob = await join("strict"), await join("strict")
    await alice.ws.send_to(**frame)
    reply = await alice.frame()
    assert set(reply) == {"error"}, case
    assert isinstance(reply["error"], str)
    await bob.assert_quiet()
    await alice.say("x" * 4096)  # the limit itself is allowed
    assert len((await bob.messages_until(1))[0]["message"]) == 4096
    await alice.leave()
    await bob.leave()


@consumer_db
@pytest.mark.usefixtures("closing_layer")
async def test_a_message_with_a_ref_is_confirmed_or_refused_by_that_ref() -> None:
    alice, bob = await join("refs"), await join("refs")
    await alice.ws.send_to(text_data=json.dumps({"message": "x" * 4097, "ref": 1}))
    refused = await alice.frame()
    assert refused["ref"] == 1
    assert "over the limit" in refused["error"]
    await alice.ws.send_to(text_data=json.dumps({"message": "hello", "ref": 2}))
    answers = await alice.frames(2)  # the confirmation and the room's copy, in either order
    assert {"sent": 2} in answers
    assert [frame["message"] for frame in answers if "message" in frame] == ["hello"]
    assert [frame["message"] for frame in await bob.messages_until(1)] == ["hello"]
    await bob.assert_quiet()
    await alice.leave()
    await bob.leave()


@consumer_db
@pytest.mark.usefixtures("closing_layer")
async def test_rate_limit_refuses_a_flood(
    settings: SettingsWrapper, redis_url: str, prefix: str
) -> None:
    settings.CHANNEL_LAYERS = sample_channel_layers(redis_url, prefix)
    settings.CHAT_RATE_LIMIT_PER_SECOND = 0.1
    settings.CHAT_RATE_LIMIT_BURST = 3
    alice, bob = await join("flood"), await join("flood")
    for number in range(8):
        await alice.say(f"spam {number}")
    frames = await alice.frames(8)
    errors = [frame for frame in frames if "error" in frame]
    messages = [frame for frame in frames if "message" in frame]
    assert len(errors) == 5
    assert all("rate limit" in frame["error"] for frame in errors)
    # A refusal names the message it refuses, when the client numbered it.
    await alice.ws.send_to(text_data=json.dumps({"message": "spam 8", "ref": 8}))
    assert await alice.frame() == {"error": errors[0]["error"], "ref": 8}
    assert [frame["message"] for frame in messages] == ["spam 0", "spam 1", "spam 2"]
    assert [f["message"] for f in await bob.messages_until(3)] == ["spam 0", "spam 1", "spam 2"]
    await bob.assert_quiet()
    # Another connection has its own bucket.
    await bob.say("still allowed")
    assert (await alice.messages_until(1))[0]["message"] == "still allowed"
    await alice.leave()
    await bob.leave()


@consumer_db
@pytest.mark.usefixtures("closing_layer")
async def test_message_while_redis_is_down_gets_an_error_frame(
    settings: SettingsWrapper, own_redis: RedisServer, prefix: str
) -> None:
    settings.CHANNEL_LAYERS = sample_channel_layers(own_redis.url, prefix)
    alice = await join("outage")
    await alice.assert_quiet()  # the (empty) history has been read
    own_redis.stop()
    await alice.ws.send_to(text_data=json.dumps({"message": "anyone there?", "ref": 3}))
    reply = await alice.frame()
    assert set(reply) == {"error", "ref"}
    assert reply["ref"] == 3
    assert "unavailable" in reply["error"]
    await alice.leave()


@pytest.mark.usefixtures("closing_layer")
@pytest.mark.parametrize(
    "origin", [b"http://evil.example", b"http://127.0.0.1.evil.example", None], ids=str
)
@consumer_db
async def test_websocket_from_foreign_or_missing_origin_is_rejected(origin: bytes | None) -> None:
    headers = [(b"origin", origin)] if origin is not None else []
    communicator = WebsocketCommunicator(application, "/ws/lobby/", headers=headers)
    connected, _ = await communicator.connect(timeout=FRAME_TIMEOUT_S)
    assert not connected
    await communicator.disconnect()


@consumer_db
@pytest.mark.usefixtures("closing_layer")
async def test_an_after_beyond_a_stream_id_is_reported_and_recent_history_sent() -> None:
    alice = await join("farafter")
    sent = await say_and_collect(alice, ["x"])
    for after in ("123456789012345678901-0", "18446744073709551616-0"):
        bob = await join("farafter", after=after)
        assert "error" in await bob.frame()
        assert await bob.messages_until(1) == sent
        await bob.leave()
    await alice.leave()


@consumer_db
@pytest.mark.usefixtures("closing_layer")
async def test_a_socket_open_longer_than_group_expiry_keeps_receiving(
    settings: SettingsWrapper, redis_url: str, prefix: str
) -> None:
    settings.CHANNEL_LAYERS = sample_channel_layers(redis_url, prefix, group_expiry=2)
    alice = await join("renewed")
    await asyncio.sleep(3.5)  # past group_expiry: renewed after 1 s, 2 s, 3 s
    bob = await join("renewed")
    await bob.say("still here?")
    assert (await alice.messages_until(1))[0]["message"] == "still here?"
    await alice.leave()
    await bob.leave()


@consumer_db
@pytest.mark.usefixtures("closing_layer")
async def test_a_consumer_that_crashes_leaves_its_room(monkeypatch: pytest.MonkeyPatch) -> None:
    """A crashed consumer gets no disconnect(); its membership must not keep
    receiving the room's messages until group_expiry."""
    alice = await join("crash")

    def crash(*_: Any, **__: Any) -> str:
        raise RuntimeError("a bug in the handler")

    monkeypatch.setattr("chat.consumers.parse_client_frame", crash)
    await alice.say("boom")
    with pytest.raises(RuntimeError, match="a bug"):
        await alice.ws.receive_output(timeout=FRAME_TIMEOUT_S)
    layer: Any = get_channel_layer()
    group = group_name("crash")
    members = await layer._state().shards.client(group).zrange(layer.keys.group(group), 0, -1)
    assert members == []


def test_a_chat_socket_queues_a_room_burst_and_statistics_wait_a_day() -> None:
    """The sample's layer keeps up to 1,000 messages for a socket's own channel
    (the default of 100 dropped live messages of a 400-message burst); the
    statistics layer keeps them a day for a worker that is down (the default
    minute dropped them)."""
    layers: Any = project_settings.CHANNEL_LAYERS
    chat = RedisStreamsChannelLayer(**layers["default"]["CONFIG"])  # connects to nothing yet
    assert chat.get_capacity("specific.c0ffee!abc") == 1_000
    alias = project_settings.STATISTIC_CHANNEL_LAYER
    statistics = RedisStreamsChannelLayer(**layers[alias]["CONFIG"])
    assert statistics.get_capacity("statistic") == 10_000
    assert statistics.expiry >= 86_400
