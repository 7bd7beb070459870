"""``StatisticsMiddleware``: one message per request to the ``statistic`` channel."""

from __future__ import annotations

import threading
from collections.abc import Awaitable, Callable
from typing import Any

from asgiref.sync import iscoroutinefunction, markcoroutinefunction
from django.conf import settings
from django.http import HttpRequest, HttpResponseBase

from worker.records import make_record
from worker.sender import (
    DEFAULT_CHANNEL,
    DEFAULT_CHANNEL_LAYER,
    DEFAULT_SEND_TIMEOUT_S,
    StatisticSender,
)

_sender: StatisticSender | None = None
# Sync requests of a threaded server may ask for the first sender at once.
_sender_lock = threading.Lock()


def get_sender() -> StatisticSender:
    """The process-wide sender, built from the settings on first use."""
    global _sender  # noqa: PLW0603 - one sender (and one background loop) per process
    if _sender is not None:
        return _sender
    with _sender_lock:
        if _sender is None:
            _sender = StatisticSender(
                channel=getattr(settings, "STATISTIC_CHANNEL", DEFAULT_CHANNEL),
                layer_alias=getattr(settings, "STATISTIC_CHANNEL_LAYER", DEFAULT_CHANNEL_LAYER),
                timeout_s=float(
                    getattr(settings, "STATISTIC_SEND_TIMEOUT", DEFAULT_SEND_TIMEOUT_S)
                ),
            )
        return _sender


def reset_sender() -> None:
    """Drop the process-wide sender; the next request builds one from the settings again."""
    global _sender
    sender, _sender = _sender, None
    if sender is not None:
        sender.close()


def request_message(request: HttpRequest, response: HttpResponseBase) -> dict[str, Any]:
    """The ``statistic`` message describing ``request`` and its response."""
    record = make_record(
        user_agent=str(request.META.get("HTTP_USER_AGENT", "")),
        client_ip=str(request.META.get("REMOTE_ADDR", "")),
        method=str(request.method or ""),
        path=request.path,
        status=response.status_code,
    )
    return record.to_message()


class StatisticsMiddleware:
    """Reports every request to the ``statistic`` channel, sync or async.

    The send happens after the response is built, in the background, bounded
    by ``STATISTIC_SEND_TIMEOUT`` seconds; a Redis outage or a full channel
    never delays or fails the response (failures are logged, rate-limited).
    """

    sync_capable = True
    async_capable = True

    def __init__(
        self,
        get_response: Callable[[HttpRequest], HttpResponseBase]
        | Callable[[HttpRequest], Awaitable[HttpResponseBase]],
    ) -> None:
        self.get_response = get_response
        self.is_async = iscoroutinefunction(get_response)
        if self.is_async:
            markcoroutinefunction(self)

    def __call__(self, request: HttpRequest) -> Any:
        """Answer ``request``, then report it."""
        if self.is_async:
            return self.__acall__(request)
        response = self.get_response(request)
        if isinstance(response, HttpResponseBase):
            get_sender().submit_from_thread(request_message(request, response))
        return response

    async def __acall__(self, request: HttpRequest) -> HttpResponseBase:
        """Answer ``request`` asynchronously, then report it."""
        response: HttpResponseBase = await self.get_response(request)  # type: ignore[misc]
        get_sender().submit(request_message(request, response))
        return response
