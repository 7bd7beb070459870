"""The message the middleware sends per request, and its validation in the worker."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from worker.models import CLIENT_IP_MAX_LENGTH, USER_AGENT_MAX_LENGTH

MESSAGE_TYPE = "request.statistic"
PATH_MAX_LENGTH = 500
METHOD_MAX_LENGTH = 16


@dataclass(frozen=True, slots=True)
class RequestRecord:
    """One HTTP request as the statistics see it."""

    user_agent: str
    client_ip: str
    method: str
    path: str
    status: int
    timestamp: float  # seconds since the epoch

    def to_message(self) -> dict[str, Any]:
        """The channel layer message for this record."""
        return {
            "type": MESSAGE_TYPE,
            "user_agent": self.user_agent,
            "client_ip": self.client_ip,
            "method": self.method,
            "path": self.path,
            "status": self.status,
            "timestamp": self.timestamp,
        }

    @property
    def minute(self) -> datetime:
        """The start of the UTC minute the request was made in."""
        moment = datetime.fromtimestamp(self.timestamp, tz=UTC)
        return moment.replace(second=0, microsecond=0)


class InvalidRecordError(ValueError):
    """A ``statistic`` message that does not describe a request."""


def make_record(
    *, user_agent: str, client_ip: str, method: str, path: str, status: int
) -> RequestRecord:
    """Build a record for a request that has just been answered, truncating long fields."""
    return RequestRecord(
        user_agent=user_agent[:USER_AGENT_MAX_LENGTH],
        client_ip=client_ip[:CLIENT_IP_MAX_LENGTH],
        method=method[:METHOD_MAX_LENGTH],
        path=path[:PATH_MAX_LENGTH],
        status=status,
        timestamp=time.time(),
    )


def parse_message(message: dict[str, Any]) -> RequestRecord:
    """Turn a ``statistic`` message back into a record.

    Raises:
        InvalidRecordError: a field is missing or has the wrong type.
    """
    try:
        user_agent = message["user_agent"]
        client_ip = message["client_ip"]
        method = message["method"]
        path = message["path"]
        status = message["status"]
        timestamp = message["timestamp"]
    except KeyError as exc:
        msg = f"statistic message without {exc.args[0]!r}: {message!r}"
        raise InvalidRecordError(msg) from None
    texts = (user_agent, client_ip, method, path)
    if not all(isinstance(value, str) for value in texts):
        msg = f"statistic message with a non-text field: {message!r}"
        raise InvalidRecordError(msg)
    if not isinstance(status, int) or not isinstance(timestamp, int | float):
        msg = f"statistic message with a bad status or timestamp: {message!r}"
        raise InvalidRecordError(msg)
    return RequestRecord(
        user_agent=user_agent[:USER_AGENT_MAX_LENGTH],
        client_ip=client_ip[:CLIENT_IP_MAX_LENGTH],
        method=method[:METHOD_MAX_LENGTH],
        path=path[:PATH_MAX_LENGTH],
        status=status,
        timestamp=float(timestamp),
    )
