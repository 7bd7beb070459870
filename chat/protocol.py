"""The chat's websocket protocol: what a client may send, what it receives.

Client to server, one JSON object per text frame::

    {"message": "hello", "ref": 7}

``ref`` is optional: a number the client picks (a non-negative integer up to
2**53 - 1) to match the server's answer to this message.

Server to client, one JSON object per text frame:

* a chat message: ``{"message": "hello", "id": "1718000000000-0", "time": "...Z"}``;
  ``id`` is the message's stream ID in the room history, ``time`` the UTC
  time (ISO 8601) at which it was recorded;
* a refusal: ``{"error": "..."}`` (the connection stays open), with the
  refused message's ``"ref"`` when it carried a readable one, so a client
  can give its user the text back;
* ``{"sent": 7}``: the message whose ``ref`` was 7 is recorded in the room
  (sent only for messages that carry a ``ref``);
* a gap notice: ``{"gap": true, "error": "..."}`` when a resuming client
  asked for messages older than the history still holds.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

DEFAULT_MAX_MESSAGE_BYTES = 4096
# A frame may carry JSON escapes around the message; anything larger than
# this multiple of the message limit is refused before it is parsed.
FRAME_OVERHEAD_FACTOR = 8
# Both halves of a Redis stream ID are unsigned 64-bit integers.
_STREAM_ID = re.compile(r"([0-9]{1,20})-([0-9]{1,20})")
_STREAM_ID_MAX = 2**64 - 1
# The largest integer a JavaScript number holds exactly.
REF_MAX = 2**53 - 1


class FrameError(ValueError):
    """A client frame that is not a valid chat message; the text says why.

    ``ref`` is the frame's ``ref`` when it could be read, else None.
    """

    def __init__(self, reason: str, *, ref: int | None = None) -> None:
        super().__init__(reason)
        self.ref = ref


@dataclass(frozen=True, slots=True)
class ClientFrame:
    """A valid chat message from a client, and the ``ref`` it carried (or None)."""

    message: str
    ref: int | None = None


class StreamId(tuple[int, int]):
    """A Redis stream ID ``"<ms>-<seq>"``, ordered as the pair of integers.

    Comparing IDs as strings is wrong ("9-0" > "10-0"); this class compares
    them as numbers.
    """

    __slots__ = ()

    def __new__(cls, ms: int, seq: int) -> StreamId:
        return super().__new__(cls, (ms, seq))

    @classmethod
    def parse(cls, text: str) -> StreamId:
        """Parse ``"<ms>-<seq>"``.

        Raises:
            ValueError: ``text`` is not a stream ID.
        """
        match = _STREAM_ID.fullmatch(text)
        if match is None or max(int(match[1]), int(match[2])) > _STREAM_ID_MAX:
            msg = f"not a stream ID: {text!r}"
            raise ValueError(msg)
        return cls(int(match[1]), int(match[2]))

    @property
    def ms(self) -> int:
        """Milliseconds since the epoch at which Redis recorded the entry."""
        return self[0]

    def __str__(self) -> str:
        return f"{self[0]}-{self[1]}"


def parse_client_frame(text: str | None, *, max_message_bytes: int) -> ClientFrame:
    """Return the chat message, and its ``ref``, carried by a client text frame.

    Raises:
        FrameError: a binary frame, a frame that is not a JSON object, a
            ``ref`` that is not an integer from 0 to REF_MAX, a missing or
            non-string ``message``, an empty message, or a message over
            ``max_message_bytes`` (UTF-8). Its ``ref`` is the frame's, once
            that was read.
    """
    if text is None:
        msg = "binary frames are not supported; send JSON text"
        raise FrameError(msg)
    if len(text) > max_message_bytes * FRAME_OVERHEAD_FACTOR:
        msg = f"frame too large (limit {max_message_bytes} bytes of message)"
        raise FrameError(msg)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError):  # RecursionError: nested too deep
        msg = "invalid JSON"
        raise FrameError(msg) from None
    if not isinstance(data, dict):
        msg = 'expected a JSON object like {"message": "..."}'
        raise FrameError(msg)
    ref = _ref(data)
    message = data.get("message")
    if message is None:
        msg = 'missing "message"'
        raise FrameError(msg, ref=ref)
    if not isinstance(message, str):
        msg = '"message" must be a string'
        raise FrameError(msg, ref=ref)
    if not message.strip():
        msg = '"message" is empty'
        raise FrameError(msg, ref=ref)
    try:
        size = len(message.encode("utf-8"))
    except UnicodeEncodeError:
        msg = '"message" is not valid Unicode text'
        raise FrameError(msg, ref=ref) from None
    if size > max_message_bytes:
        msg = f'"message" is {size} bytes, over the limit of {max_message_bytes}'
        raise FrameError(msg, ref=ref)
    return ClientFrame(message, ref)


def _ref(data: dict[str, Any]) -> int | None:
    """The frame's ``ref``: None if absent; FrameError if not an integer from 0 to REF_MAX."""
    ref = data.get("ref")
    if ref is None:
        return None
    # bool is an int in Python, but true is no ref.
    if isinstance(ref, bool) or not isinstance(ref, int) or not 0 <= ref <= REF_MAX:
        msg = f'"ref" must be an integer from 0 to {REF_MAX}'
        raise FrameError(msg)
    return ref


def message_frame(message: str, history_id: StreamId) -> str:
    """The JSON text frame that delivers one chat message."""
    recorded = datetime.fromtimestamp(history_id.ms / 1000, tz=UTC)
    payload: dict[str, Any] = {
        "message": message,
        "id": str(history_id),
        "time": recorded.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    return json.dumps(payload)


def error_frame(reason: str, *, ref: int | None = None) -> str:
    """The JSON text frame that refuses a client frame (with its ``ref``, if any)."""
    payload: dict[str, Any] = {"error": reason}
    if ref is not None:
        payload["ref"] = ref
    return json.dumps(payload)


def sent_frame(ref: int) -> str:
    """The JSON text frame that tells a client its message ``ref`` is recorded."""
    return json.dumps({"sent": ref})


def gap_frame() -> str:
    """The JSON text frame that tells a resuming client some messages are gone."""
    return json.dumps(
        {"gap": True, "error": "some messages you missed are no longer in the room history"}
    )
