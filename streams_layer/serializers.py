"""Message <-> bytes, reusing channels_redis's serializers.

channels_redis already does msgpack/json and Fernet encryption with key
rotation well; this module adds validation, typed errors and a size limit.
"""

from __future__ import annotations

from typing import Any

from channels_redis.serializers import registry

from .exceptions import InvalidMessageError, MalformedEntryError, MessageTooLarge

Message = dict[str, Any]

RESERVED_KEY = "__asgi_channel__"
# msgpack and json both raise these for values they cannot represent.
_ENCODE_ERRORS = (TypeError, ValueError, OverflowError)


class MessageCodec:
    """Serializes messages once, checks them, and decodes stream payloads."""

    def __init__(
        self,
        *,
        serializer_format: str,
        symmetric_encryption_keys: tuple[str | bytes, ...],
        expiry_s: int,
        max_message_bytes: int,
    ) -> None:
        self._serializer = registry.get_serializer(
            serializer_format,
            symmetric_encryption_keys=list(symmetric_encryption_keys) or None,
            random_prefix_length=0,
            expiry=expiry_s,
        )
        self.max_message_bytes = max_message_bytes
        # msgpack writes any map key but reads back only str/bytes keys, so a
        # nested non-str key would be accepted here and dropped by the reader.
        self._nested_keys_must_be_text = serializer_format == "msgpack"

    def encode(self, message: Any) -> bytes:
        """Validate and serialize ``message``.

        Raises :class:`InvalidMessageError` for a non-dict, a reserved key or
        an unserializable value, :class:`MessageTooLarge` over the size limit.
        """
        if not isinstance(message, dict):
            raise InvalidMessageError(f"message must be a dict, got {type(message).__name__}")
        for key, value in message.items():
            if not isinstance(key, str):
                raise InvalidMessageError(f"message keys must be str, got {key!r}")
            if self._nested_keys_must_be_text and isinstance(value, (dict, list, tuple)):
                _require_text_keys(value)
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


def _require_text_keys(value: Any) -> None:
    """Raise InvalidMessageError for a dict key below ``value`` that is not str or bytes."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, dict):
            for key, nested in item.items():
                if not isinstance(key, (str, bytes)):
                    raise InvalidMessageError(f"nested dict keys must be str or bytes, got {key!r}")
                stack.append(nested)
        elif isinstance(item, (list, tuple)):
            stack.extend(item)
