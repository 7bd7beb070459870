"""Group history: a bounded stream of a group's recorded messages.

The extension behind chat history and resume: ``group_send_recorded`` stores
a message before fanning it out, and ``group_history`` reads what a member
missed. IDs are stream IDs (``"<ms>-<seq>"``), increasing in send order.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from .serializers import Message

HISTORY_ID_KEY = "history_id"
MAX_HISTORY_LIMIT = 1000
_STREAM_ID = re.compile(r"^\d{1,20}-\d{1,20}$")
# Both halves of a stream ID are 64-bit: no ID is longer than this one.
LONGEST_STREAM_ID = f"{2**64 - 1}-{2**64 - 1}"


@dataclass(frozen=True)
class GroupHistory:
    """Recorded messages of a group, oldest first.

    ``complete`` is False when messages after the requested ID were already
    trimmed from the history, so the list has a gap at its start.
    """

    messages: list[Message] = field(default_factory=list)
    complete: bool = True


def parse_stream_id(value: Any) -> tuple[int, int]:
    """``"<ms>-<seq>"`` as a pair of ints; raises ValueError for anything else."""
    if isinstance(value, bytes):
        value = value.decode()
    if not isinstance(value, str) or not _STREAM_ID.match(value):
        raise ValueError(f"not a stream ID: {value!r}")
    ms, seq = value.split("-")
    return int(ms), int(seq)


def is_complete(after: str | None, trimmed_upto: bytes | str | None) -> bool:
    """Whether nothing recorded after ``after`` was trimmed from the history."""
    if after is None or trimmed_upto is None:
        return True
    return parse_stream_id(trimmed_upto) <= parse_stream_id(after)
