"""Message <-> bytes, reusing channels_redis's serializers.

channels_redis already does msgpack/json and Fernet encryption with key
rotation well; this module adds validation, typed errors and a size limit.
"""

from __future__ import annotations

from typing import Any

from channels_redis.serializers import registry

from .config import MAX_MESSAGE_DEPTH
from .exceptions import InvalidMessageError, MalformedEntryError, MessageTooLarge

Message = dict[str, Any]

RESERVED_KEY = "__asgi_channel__"
# msgpack and json both raise these for values they cannot represent; json
# raises RecursionError for nesting deeper than Python's stack allows.
_ENCODE_ERRORS = (TypeError, ValueError, OverflowError, RecursionError)


class MessageCodec:
    """Serializes messages once, checks them, and decodes stream payloads."""

    def __init__(
        self,
        *,
        serializer_format: str,
        symmetric_encryption_keys: tuple[str | bytes, ...],
        expiry_s: float,
        max_message_bytes: int,
    ) -> None:
        self._serializer = registry.get_serializer(
            serializer_format,
            symmetric_encryption_keys=list(symmetric_encryption_keys) or None,
            random_prefix_length=0,
            expiry=expiry_s,
        )
        self.max_message_bytes = max_message_bytes
        # Nesting is checked for the built-in formats: msgpack reads back no
        # deeper than it writes (1,024 levels against 1,025), and json's limit
        # moves with the Python version (5,000 levels: RecursionError on 3.11,
        # written on 3.13). msgpack also writes any map key but reads back
        # only str/bytes keys, so a nested non-str key would be dropped.
        self._check_nesting = serializer_format in ("msgpack", "json")
        self._nested_keys_must_be_text = serializer_format == "msgpack"

    def encode(self, message: Any) -> bytes:
        """Validate and serialize ``message``.

        Raises :class:`InvalidMessageError` for a non-dict, a reserved key, an
        unserializable value or (msgpack, json) nesting deeper than
        ``MAX_MESSAGE_DEPTH``, :class:`MessageTooLarge` over the size limit.
        """
        if not isinstance(message, dict):
            raise InvalidMessageError(f"message must be a dict, got {type(message).__name__}")
        for key, value in message.items():
            if not isinstance(key, str):
                raise InvalidMessageError(f"message keys must be str, got {key!r}")
            if self._check_nesting and isinstance(value, (dict, list, tuple)):
                _check_nested(value, text_keys=self._nested_keys_must_be_text)
        if RESERVED_KEY in message:
            raise InvalidMessageError(f"message key {RESERVED_KEY!r} is reserved")
        try:
            payload: bytes = self._serializer.serialize(message)
        except _ENCODE_ERRORS as exc:
            raise InvalidMessageError(f"message cannot be serialized: {exc}") from exc
        if len(payload) > self.max_message_bytes:
            raise MessageTooLarge(
                f"serialized message is {len(payload)} bytes, "
                f"over max_message_bytes={self.max_message_bytes}"
            )
        return payload

    def decode(self, payload: bytes) -> Message:
        """Deserialize a stream payload; raises :class:`MalformedEntryError`."""
        try:
            message = self._serializer.deserialize(payload)
        except Exception as exc:
            raise MalformedEntryError(f"cannot decode payload: {exc!r}") from exc
        if not isinstance(message, dict):
            raise MalformedEntryError(f"payload is a {type(message).__name__}, not a dict")
        return message


def _check_nested(value: Any, *, text_keys: bool) -> None:
    """Raise InvalidMessageError for what cannot be written or read back below ``value``.

    That is containers nested more than ``MAX_MESSAGE_DEPTH`` deep, the
    message itself counting as one (a value that contains itself is
    infinitely deep, so it is refused too rather than walked forever), and
    with ``text_keys`` a dict key that is not str or bytes.
    """
    stack = [(value, 2)]  # ``value`` is a value of the message: one level down
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list, tuple)) and depth > MAX_MESSAGE_DEPTH:
            raise InvalidMessageError(
                f"message nests more than {MAX_MESSAGE_DEPTH} levels deep (or contains itself)"
            )
        if isinstance(item, dict):
            for key, nested in item.items():
                if text_keys and not isinstance(key, (str, bytes)):
                    raise InvalidMessageError(f"nested dict keys must be str or bytes, got {key!r}")
                stack.append((nested, depth + 1))
        elif isinstance(item, (list, tuple)):
            stack.extend((nested, depth + 1) for nested in item)
