"""Sending request records to the ``statistic`` channel without holding up responses.

A send runs in the background, is bounded in time and in number, and its
failures are logged at most once per interval with a count, so a Redis
outage produces a handful of log lines instead of one per request.
"""

from __future__ import annotations

import asyncio
import logging
import threading
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import Future
from typing import Any

import redis.exceptions
from channels.exceptions import ChannelFull
from channels.layers import get_channel_layer

from streams_layer.exceptions import StreamsLayerError

logger = logging.getLogger(__name__)

DEFAULT_CHANNEL = "statistic"
# The CHANNEL_LAYERS alias statistics go through (settings.STATISTIC_CHANNEL_LAYER).
DEFAULT_CHANNEL_LAYER = "default"
# The send runs after the response has gone, so this bounds background work,
# not latency; it is generous enough for a first connection on a busy host.
DEFAULT_SEND_TIMEOUT_S = 1.0
DEFAULT_MAX_IN_FLIGHT = 1000
DEFAULT_LOG_INTERVAL_S = 30.0

# Everything a send may fail with when Redis is down, slow or full.
SEND_ERRORS: tuple[type[BaseException], ...] = (
    StreamsLayerError,
    ChannelFull,
    redis.exceptions.RedisError,
    OSError,
    TimeoutError,
)


class FailureLog:
    """Logs failures at most once per ``interval_s``, with how many happened meanwhile."""

    def __init__(
        self,
        log: logging.Logger,
        *,
        interval_s: float = DEFAULT_LOG_INTERVAL_S,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._log = log
        self._interval_s = interval_s
        self._clock = clock
        self._lock = threading.Lock()
        self._last_logged: float | None = None
        self._count = 0

    def record(self, reason: str) -> None:
        """Count one failure; log if the last log line is older than the interval."""
        with self._lock:
            self._count += 1
            now = self._clock()
            if self._last_logged is not None and now - self._last_logged < self._interval_s:
                return
            count, self._count = self._count, 0
            self._last_logged = now
        self._log.warning(
            "request statistics not sent: %d failure(s) since the last report; latest: %s",
            count,
            reason,
        )


class StatisticSender:
    """Sends messages to one channel in the background, within ``timeout_s`` each.

    From async code call :meth:`submit`; from a thread without an event loop
    call :meth:`submit_from_thread`, which uses one long-lived background loop
    (so the layer keeps one connection pool instead of one per request).
    At most ``max_in_flight`` sends are pending; beyond that records are
    dropped and counted as failures.
    """

    def __init__(
        self,
        *,
        channel: str = DEFAULT_CHANNEL,
        layer_alias: str = DEFAULT_CHANNEL_LAYER,
        timeout_s: float = DEFAULT_SEND_TIMEOUT_S,
        max_in_flight: int = DEFAULT_MAX_IN_FLIGHT,
        failures: FailureLog | None = None,
    ) -> None:
        self.channel = channel
        self.layer_alias = layer_alias
        self.timeout_s = timeout_s
        self.max_in_flight = max_in_flight
        self.failures = failures or FailureLog(logger)
        self._tasks: set[asyncio.Task[None]] = set()
        self._thread_futures: set[Future[None]] = set()
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        # Layers used on the background loop, closed there by close().
        self._background_layers: list[Any] = []

    def in_flight(self) -> int:
        """How many sends are pending."""
        with self._lock:
            return len(self._tasks) + len(self._thread_futures)

    def submit(self, message: dict[str, Any]) -> None:
        """Start sending ``message`` on the running event loop; return at once."""
        if self.in_flight() >= self.max_in_flight:
            self.failures.record(f"{self.max_in_flight} sends already pending")
            return
        task = asyncio.get_running_loop().create_task(self.send(message))
        with self._lock:
            self._tasks.add(task)
        task.add_done_callback(self._forget_task)

    def submit_from_thread(self, message: dict[str, Any]) -> None:
        """Start sending ``message`` on the background loop; return at once."""
        if self.in_flight() >= self.max_in_flight:
            self.failures.record(f"{self.max_in_flight} sends already pending")
            return
        future = self._run_in_background(self.send(message))
        with self._lock:
            self._thread_futures.add(future)
        future.add_done_callback(self._forget_future)

    async def send(self, message: dict[str, Any]) -> None:
        """Send ``message``, giving up after ``timeout_s``; failures are logged, not raised."""
        layer = get_channel_layer(self.layer_alias)
        if layer is None:
            self.failures.record(f"no channel layer {self.layer_alias!r} in CHANNEL_LAYERS")
            return
        on_background_loop = self._loop is not None and asyncio.get_running_loop() is self._loop
        if on_background_loop and not any(known is layer for known in self._background_layers):
            self._background_layers.append(layer)
        try:
            await asyncio.wait_for(layer.send(self.channel, message), self.timeout_s)
        except SEND_ERRORS as exc:
            # A timeout carries no text of its own.
            reason = str(exc) or f"no answer within {self.timeout_s} s"
            self.failures.record(f"{type(exc).__name__}: {reason}")

    async def drain(self) -> None:
        """Wait until the sends started on this event loop have finished."""
        with self._lock:
            tasks = [task for task in self._tasks if task.get_loop() is asyncio.get_running_loop()]
        if tasks:
            await asyncio.gather(*tasks)

    def drain_thread(self, timeout_s: float = 5.0) -> None:
        """Wait until the sends started with :meth:`submit_from_thread` have finished."""
        with self._lock:
            futures = list(self._thread_futures)
        for future in futures:
            future.result(timeout=timeout_s)

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the background loop, closing the layer connections it opened."""
        with self._lock:
            loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return
        closing = asyncio.run_coroutine_threadsafe(self._close_background_layers(), loop)
        try:
            closing.result(timeout=timeout_s)
        except SEND_ERRORS as exc:
            logger.debug("closing the statistics layer failed: %s", exc)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout_s)
        with self._lock:
            self._loop = self._thread = None
        if not thread.is_alive():
            loop.close()

    async def _close_background_layers(self) -> None:
        tasks = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        if tasks:
            await asyncio.wait(tasks, timeout=self.timeout_s * 2)
        layers, self._background_layers = self._background_layers, []
        for layer in layers:
            close = getattr(layer, "close", None)
            if close is not None:
                await close()

    def _forget_task(self, task: asyncio.Task[None]) -> None:
        with self._lock:
            self._tasks.discard(task)

    def _forget_future(self, future: Future[None]) -> None:
        with self._lock:
            self._thread_futures.discard(future)

    def _run_in_background(self, coro: Coroutine[Any, Any, None]) -> Future[None]:
        with self._lock:
            if self._loop is None:
                self._loop = asyncio.new_event_loop()
                self._thread = threading.Thread(
                    target=self._loop.run_forever, name="statistic-sender", daemon=True
                )
                self._thread.start()
            loop = self._loop
        return asyncio.run_coroutine_threadsafe(coro, loop)
