"""Message codec: validation, size limit and typed decode errors (no Redis)."""

from __future__ import annotations

import pytest

from streams_layer.config import MAX_MESSAGE_DEPTH
from streams_layer.exceptions import InvalidMessageError, MalformedEntryError, MessageTooLarge
from streams_layer.serializers import MessageCodec


def codec(fmt: str = "msgpack", keys: tuple[str, ...] = (), limit: int = 1024) -> MessageCodec:
    return MessageCodec(
        serializer_format=fmt, symmetric_encryption_keys=keys, expiry_s=60, max_message_bytes=limit
    )


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_round_trip(fmt: str) -> None:
    message = {"type": "chat.message", "text": "héllo", "n": -(2**63), "nested": {"a": [1, None]}}
    assert codec(fmt).decode(codec(fmt).encode(message)) == message


@pytest.mark.parametrize("message", [None, [], "text", 3])
def test_non_dict_message_is_refused(message: object) -> None:
    with pytest.raises(InvalidMessageError, match="dict"):
        codec().encode(message)


def test_reserved_and_non_str_keys_are_refused() -> None:
    with pytest.raises(InvalidMessageError, match="__asgi_channel__"):
        codec().encode({"type": "x", "__asgi_channel__": "y"})
    with pytest.raises(InvalidMessageError, match="1"):
        codec().encode({1: "x"})


def test_unserializable_value_is_refused_with_a_typed_error() -> None:
    with pytest.raises(InvalidMessageError, match="serialized"):
        codec().encode({"type": "x", "value": object()})
    with pytest.raises(InvalidMessageError):
        codec().encode({"type": "x", "value": 2**64})


def _nested(depth: int) -> list[object]:
    """Lists nested ``depth`` deep."""
    outer: list[object] = []
    inner = outer
    for _ in range(depth - 1):
        deeper: list[object] = []
        inner.append(deeper)
        inner = deeper
    return outer


@pytest.mark.timeout(5)
@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_message_that_contains_itself_is_refused_with_a_typed_error(fmt: str) -> None:
    items: list[object] = []
    items.append(items)
    mapping: dict[str, object] = {}
    mapping["self"] = mapping
    for value in (items, mapping, [{"a": items}]):
        with pytest.raises(InvalidMessageError):
            codec(fmt).encode({"type": "x", "value": value})


@pytest.mark.parametrize("fmt", ["msgpack", "json"])
def test_message_nested_too_deep_is_refused_with_a_typed_error(fmt: str) -> None:
    with pytest.raises(InvalidMessageError):
        codec(fmt, limit=1 << 20).encode({"type": "x", "value": _nested(5000)})


def test_msgpack_message_nested_to_the_depth_limit_round_trips() -> None:
    # The message counts as one level, so its value may hold MAX_MESSAGE_DEPTH - 1.
    message = {"type": "x", "value": _nested(MAX_MESSAGE_DEPTH - 1)}
    assert codec().decode(codec().encode(message)) == message
    with pytest.raises(InvalidMessageError, match=str(MAX_MESSAGE_DEPTH)):
        codec().encode({"type": "x", "value": _nested(MAX_MESSAGE_DEPTH)})


def test_size_limit_counts_serialized_bytes() -> None:
    small = codec(limit=100)
    small.encode({"type": "x", "text": "a" * 50})
    with pytest.raises(MessageTooLarge, match="100"):
        small.encode({"type": "x", "text": "a" * 200})


def test_garbage_payload_raises_malformed_entry_error() -> None:
    with pytest.raises(MalformedEntryError):
        codec().decode(b"\xc1\xc1 not msgpack")
    with pytest.raises(MalformedEntryError, match="not a dict"):
        codec("json").decode(b"[1, 2]")


def test_encrypted_payload_hides_plaintext_and_rotates_keys() -> None:
    old = codec(keys=("old-key",))
    payload = old.encode({"type": "secret", "text": "plaintext-marker"})
    assert b"plaintext-marker" not in payload
    rotated = codec(keys=("new-key", "old-key"))
    assert rotated.decode(payload)["text"] == "plaintext-marker"
    with pytest.raises(MalformedEntryError):
        codec(keys=("wrong-key",)).decode(payload)
