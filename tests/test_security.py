"""Security checks behind docs/security.md.

- Encryption: with ``symmetric_encryption_keys`` no payload is readable in
  Redis; a layer with another key (or none) reads nothing and logs why; key
  rotation works; a tampered entry is refused; a replayed entry is accepted
  within Fernet's TTL (a documented limitation) and refused after it.
- The sample project: hostile room names, chat messages and user agents
  never reach a page unescaped (room page, ``/stats/``, ``/stats.json``, the
  websocket frames); foreign origins are refused; size and rate limits hold.
"""

from __future__ import annotations

import asyncio
import html
import json
import logging
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack
import pytest
import redis.asyncio
from asgiref.sync import sync_to_async
from channels.layers import get_channel_layer
from channels.testing import WebsocketCommunicator
from django.test import Client
from pytest_django.fixtures import Settings as SettingsWrapper

from project.asgi import application
from streams_layer.keys import KeySpace
from tests.layer_helpers import (
    LayerFactory,
    raw_stream_bytes,
    receive_within,
    receives_nothing,
    sample_channel_layers,
)
from worker.aggregate import record_requests
from worker.models import USER_AGENT_MAX_LENGTH
from worker.records import parse_message

KEY = "security-test-key"
OTHER_KEY = "an-attackers-guess"
ORIGIN = b"http://127.0.0.1"
FRAME_TIMEOUT_S = 5.0
ROOM_JS = Path(__file__).resolve().parent.parent / "chat" / "static" / "chat" / "room.js"

HOSTILE_TEXTS = [
    "<script>alert(1)</script>",
    '"><img src=x onerror=alert(1)>',
    "</script><script>alert(document.cookie)</script>",
    "' onmouseover='alert(1)",
    "]]><script>alert(1)</script>",
    "</title></svg><svg onload=alert(1)>",
    "{{ 7|add:7 }}{% debug %}",
    "javascript:alert(1)",
    "\u202egnp.exe \u2028\u2029 line separators",
    "&lt;already-escaped&gt; &amp;",
]


def skipped_lines(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [
        r.getMessage()
        for r in caplog.records
        if r.name.startswith("streams_layer") and "skipping" in r.getMessage()
    ]


# -- encryption -------------------------------------------------------------------------


async def _send_everywhere(layer: Any, marker: str, fmt: str) -> tuple[str, list[str]]:
    """One message on every path: specific, normal, group, recorded group."""
    channel = await layer.new_channel()
    await layer.group_add("secure-room", channel)
    message: dict[str, Any] = {"type": f"secret.{marker}", "text": marker}
    if fmt == "msgpack":
        message["blob"] = marker.encode()
    await layer.send(channel, message)
    await layer.send("secure.jobs", message)
    await layer.group_send("secure-room", message)
    await layer.group_send_recorded("secure-room", message)
    return channel, [channel, "secure.jobs", channel, channel]


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
@pytest.mark.parametrize("encrypted", [True, False], ids=["encrypted", "plain"])
async def test_payloads_in_redis_are_unreadable_only_with_encryption(
    make_layer: LayerFactory,
    redis_client: redis.asyncio.Redis,
    prefix: str,
    fmt: str,
    encrypted: bool,
) -> None:
    layer = make_layer(
        serializer_format=fmt, symmetric_encryption_keys=[KEY] if encrypted else None
    )
    marker = "MARKER" + uuid.uuid4().hex
    _, receivers = await _send_everywhere(layer, marker, fmt)
    raw = await raw_stream_bytes(redis_client, prefix)
    assert raw, "the scan found no stream entries"
    # The plain layer shows that the scan does see payloads.
    assert (marker.encode() in raw) is not encrypted
    # Every message still arrives for the layer holding the key.
    for channel in receivers:
        assert (await receive_within(layer, channel))["text"] == marker


async def test_group_history_is_encrypted_too(
    make_layer: LayerFactory, redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    layer = make_layer(symmetric_encryption_keys=[KEY])
    marker = "HISTORY" + uuid.uuid4().hex
    await layer.group_send_recorded("secure-room", {"type": "x", "text": marker})
    entries: Any = await redis_client.xrange(KeySpace(prefix).history("secure-room"))
    assert len(entries) == 1
    assert marker.encode() not in b"".join(entries[0][1].values())
    history = await layer.group_history("secure-room")
    assert [m["text"] for m in history.messages] == [marker]


@pytest.mark.parametrize("reader_keys", [[OTHER_KEY], None], ids=["other-key", "no-key"])
@pytest.mark.parametrize("kind", ["specific", "normal"])
async def test_a_layer_without_the_key_reads_nothing(
    make_layer: LayerFactory,
    caplog: pytest.LogCaptureFixture,
    reader_keys: list[str] | None,
    kind: str,
) -> None:
    caplog.set_level(logging.WARNING, logger="streams_layer")
    writer = make_layer(symmetric_encryption_keys=[KEY])
    # The reader owns the specific channel, so the writer's messages land in its inbox.
    reader = make_layer(symmetric_encryption_keys=reader_keys)
    channel = await reader.new_channel() if kind == "specific" else "secure.jobs"
    for n in range(3):
        await writer.send(channel, {"type": "x", "n": n})
    assert await receives_nothing(reader, channel, 1.0)
    assert len(skipped_lines(caplog)) == 3


async def test_key_rotation_new_key_first_reads_old_messages(make_layer: LayerFactory) -> None:
    old = make_layer(symmetric_encryption_keys=["old-key"])
    rotated = make_layer(symmetric_encryption_keys=["new-key", "old-key"])
    await old.send("secure.rotate", {"type": "x", "n": 1})
    await rotated.send("secure.rotate", {"type": "x", "n": 2})
    assert (await receive_within(rotated, "secure.rotate"))["n"] == 1
    assert (await receive_within(rotated, "secure.rotate"))["n"] == 2
    # Messages encrypted with the new key are unreadable for a layer that only has the old one.
    await rotated.send("secure.rotate", {"type": "x", "n": 3})
    assert await receives_nothing(old, "secure.rotate", 0.5)


async def _raw_entry(client: redis.asyncio.Redis, key: str) -> dict[bytes, bytes]:
    entries: Any = await client.xrange(key)
    assert entries, f"no entry in {key}"
    fields: dict[bytes, bytes] = entries[-1][1]
    return fields


async def test_tampered_ciphertext_is_refused(
    make_layer: LayerFactory,
    redis_client: redis.asyncio.Redis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="streams_layer")
    layer = make_layer(symmetric_encryption_keys=[KEY])
    key = KeySpace(prefix).channel("secure.tamper")
    await layer.send("secure.tamper", {"type": "x", "amount": 10})
    token = bytearray((await _raw_entry(redis_client, key))[b"m"])
    middle = len(token) // 2
    token[middle] = ord("A") if token[middle] != ord("A") else ord("B")
    await redis_client.xadd(key, {"m": bytes(token)})
    await layer.send("secure.tamper", {"type": "x", "amount": 20})
    assert (await receive_within(layer, "secure.tamper"))["amount"] == 10
    assert (await receive_within(layer, "secure.tamper"))["amount"] == 20
    assert len(skipped_lines(caplog)) == 1


async def test_replayed_entry_is_delivered_again_within_fernet_ttl(
    make_layer: LayerFactory, redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    # Fernet gives confidentiality and integrity, not replay protection: an
    # attacker with write access to Redis can re-add a captured entry, and it
    # is accepted until the token's age exceeds expiry + 10 s.
    layer = make_layer(symmetric_encryption_keys=[KEY])
    key = KeySpace(prefix).channel("secure.replay")
    await layer.send("secure.replay", {"type": "pay", "amount": 10})
    captured = await _raw_entry(redis_client, key)
    assert (await receive_within(layer, "secure.replay"))["amount"] == 10
    await redis_client.xadd(key, {b"m": captured[b"m"]})
    assert (await receive_within(layer, "secure.replay"))["amount"] == 10


@pytest.mark.slow
@pytest.mark.standalone_only(
    reason="waits 12 s for the Fernet TTL; the check is in the codec, not in Redis"
)
async def test_replayed_entry_is_refused_after_fernet_ttl(
    make_layer: LayerFactory,
    redis_client: redis.asyncio.Redis,
    prefix: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="streams_layer")
    layer = make_layer(symmetric_encryption_keys=[KEY], expiry=1)
    key = KeySpace(prefix).channel("secure.replay")
    await layer.send("secure.replay", {"type": "pay", "amount": 10})
    captured = await _raw_entry(redis_client, key)
    assert (await receive_within(layer, "secure.replay"))["amount"] == 10
    # channels_redis decrypts with ttl = expiry + 10 s; Fernet counts whole seconds.
    await asyncio.sleep(1 + 10 + 1.5)
    await redis_client.xadd(key, {b"m": captured[b"m"]})
    assert await receives_nothing(layer, "secure.replay", 1.0)
    assert any("InvalidToken" in line for line in skipped_lines(caplog))


async def test_payload_is_not_msgpack_or_json_when_encrypted(
    make_layer: LayerFactory, redis_client: redis.asyncio.Redis, prefix: str
) -> None:
    layer = make_layer(symmetric_encryption_keys=[KEY])
    await layer.send("secure.opaque", {"type": "x", "text": "hello"})
    payload = (await _raw_entry(redis_client, KeySpace(prefix).channel("secure.opaque")))[b"m"]
    assert payload.startswith(b"gAAAAA")  # a Fernet token (version byte 0x80, base64)
    with pytest.raises((ValueError, msgpack.ExtraData)):
        msgpack.unpackb(payload)
    with pytest.raises(json.JSONDecodeError):
        json.loads(payload)


# -- the sample project: injection ------------------------------------------------------


@pytest.fixture
async def site(settings: SettingsWrapper, redis_url: str, prefix: str) -> AsyncIterator[None]:
    settings.CHANNEL_LAYERS = sample_channel_layers(redis_url, prefix)
    settings.CHAT_RATE_LIMIT_PER_SECOND = 1000.0
    settings.CHAT_RATE_LIMIT_BURST = 1000
    yield
    layer = get_channel_layer()
    if layer is not None:
        await layer.close()


HOSTILE_ROOM_PATHS = [
    "/%3Cscript%3Ealert(1)%3C%2Fscript%3E/",
    "/%22%3E%3Cimg%20src=x%20onerror=alert(1)%3E/",
    "/a%0d%0aSet-Cookie:%20x=1/",
    "/%7B%7B7*7%7D%7D/",
    "/room%00/",
    "/room;alert(1)/",
    "/%E2%80%AEroom/",
]


@pytest.mark.django_db
@pytest.mark.usefixtures("site")
@pytest.mark.parametrize("path", HOSTILE_ROOM_PATHS)
def test_hostile_room_names_are_not_found_and_not_echoed(path: str) -> None:
    response = Client().get(path)
    assert response.status_code == 404
    body = response.content.decode(errors="replace")
    for fragment in ("<script>alert", "onerror=alert", "Set-Cookie", "{{7*7}}"):
        assert fragment not in body
    assert "x" not in response.cookies


@pytest.mark.django_db
@pytest.mark.usefixtures("site")
def test_room_name_reaches_the_page_only_escaped_and_as_json() -> None:
    # The widest name the URL pattern admits; the page embeds it twice.
    room = "a-Z_0.9" * 10
    response = Client().get(f"/{room}/")
    assert response.status_code == 200
    body = response.content.decode()
    assert f'<script id="room-name" type="application/json">"{room}"</script>' in body
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["X-Frame-Options"] == "DENY"


def test_room_page_script_writes_text_never_html() -> None:
    source = ROOM_JS.read_text()
    for sink in ("innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("):
        assert sink not in source, sink
    assert "textContent" in source
    assert "createTextNode" in source


async def _join(room: str, origin: bytes | None = ORIGIN) -> WebsocketCommunicator:
    headers = [(b"origin", origin)] if origin is not None else []
    communicator = WebsocketCommunicator(application, f"/ws/{room}/", headers=headers)
    connected, _ = await communicator.connect(timeout=FRAME_TIMEOUT_S)
    assert connected
    return communicator


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("site")
async def test_hostile_chat_messages_travel_as_json_text_unchanged() -> None:
    speaker, listener = await _join("hostile"), await _join("hostile")
    for text in HOSTILE_TEXTS:
        await speaker.send_to(text_data=json.dumps({"message": text}))
        for ws in (speaker, listener):
            raw = await ws.receive_from(timeout=FRAME_TIMEOUT_S)
            frame = json.loads(raw)
            assert set(frame) == {"message", "id", "time"}
            assert frame["message"] == text
    # A late joiner gets them from the history, still as JSON strings.
    late = await _join("hostile")
    history = [json.loads(await late.receive_from(timeout=FRAME_TIMEOUT_S)) for _ in HOSTILE_TEXTS]
    assert [f["message"] for f in history] == HOSTILE_TEXTS
    # The page itself never renders messages server-side.
    page = (await sync_to_async(Client().get)("/hostile/")).content.decode()
    assert "alert(" not in page
    for ws in (speaker, listener, late):
        await ws.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("site")
@pytest.mark.parametrize(
    "origin",
    [
        b"http://127.0.0.1.evil.example",
        b"http://evil.example#127.0.0.1",
        b"http://127.0.0.1@evil.example",
        b"null",
        b"file://",
        b"http://localhost.evil.example:8000",
    ],
    ids=str,
)
async def test_spoofed_origins_are_refused(origin: bytes) -> None:
    communicator = WebsocketCommunicator(application, "/ws/lobby/", headers=[(b"origin", origin)])
    connected, _ = await communicator.connect(timeout=FRAME_TIMEOUT_S)
    assert not connected
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("site")
async def test_oversized_and_flooding_clients_are_refused(settings: SettingsWrapper) -> None:
    settings.CHAT_RATE_LIMIT_PER_SECOND = 1.0
    settings.CHAT_RATE_LIMIT_BURST = 3
    ws = await _join("limits")
    await ws.send_to(text_data=json.dumps({"message": "x" * (settings.CHAT_MAX_MESSAGE_BYTES + 1)}))
    assert "error" in json.loads(await ws.receive_from(timeout=FRAME_TIMEOUT_S))
    await ws.send_to(text_data="x" * 1_000_000)  # a megabyte that is not even JSON
    assert "error" in json.loads(await ws.receive_from(timeout=FRAME_TIMEOUT_S))
    outcomes = []
    for n in range(10):
        await ws.send_to(text_data=json.dumps({"message": f"flood {n}"}))
        outcomes.append(json.loads(await ws.receive_from(timeout=FRAME_TIMEOUT_S)))
    accepted = [o for o in outcomes if "message" in o]
    refused = [o for o in outcomes if "rate limit" in o.get("error", "")]
    assert len(accepted) == 3
    assert len(refused) == 7
    layer = get_channel_layer()
    assert layer is not None
    history = await layer.group_history("chat.limits")
    assert [m["message"] for m in history.messages] == ["flood 0", "flood 1", "flood 2"]
    await ws.disconnect()


async def _record_request_with_user_agent(user_agent: str) -> None:
    """A request through the middleware, its statistic message, stored as the worker does."""
    layer = get_channel_layer()
    assert layer is not None
    await sync_to_async(Client(HTTP_USER_AGENT=user_agent).get)("/")
    message = await asyncio.wait_for(layer.receive("statistic"), FRAME_TIMEOUT_S)
    record = parse_message(message)
    await sync_to_async(record_requests)([record])


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("site")
async def test_stats_pages_escape_hostile_user_agents() -> None:
    agents = [*HOSTILE_TEXTS, "<b>" + "A" * 2 * USER_AGENT_MAX_LENGTH]
    for agent in agents:
        await _record_request_with_user_agent(agent)
    response = await sync_to_async(Client(HTTP_USER_AGENT="checker").get)("/stats/")
    assert response.status_code == 200
    page = response.content.decode()
    for agent in HOSTILE_TEXTS:
        assert html.escape(agent, quote=True) in page or html.escape(agent) in page, agent
    for dangerous in ("<script>alert", "<img src=x", "<svg onload", "onmouseover='alert"):
        assert dangerous not in page, dangerous
    assert "A" * (USER_AGENT_MAX_LENGTH + 1) not in page  # stored truncated
    data = await sync_to_async(Client(HTTP_USER_AGENT="checker").get)("/stats.json")
    assert data["Content-Type"] == "application/json"
    assert data["X-Content-Type-Options"] == "nosniff"
    stored = {row["user_agent"] for row in json.loads(data.content)["by_user_agent"]}
    assert set(HOSTILE_TEXTS) <= stored
