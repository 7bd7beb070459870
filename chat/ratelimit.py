"""A token bucket: ``rate_per_s`` tokens a second, at most ``burst`` saved up."""

from __future__ import annotations

import time
from collections.abc import Callable


class TokenBucket:
    """Allows ``burst`` actions at once and ``rate_per_s`` actions a second on average.

    Not thread-safe; one bucket belongs to one websocket connection.

    Raises:
        ValueError: ``rate_per_s`` or ``burst`` is not positive.
    """

    def __init__(
        self,
        *,
        rate_per_s: float,
        burst: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if rate_per_s <= 0:
            msg = f"rate_per_s must be positive, got {rate_per_s!r}"
            raise ValueError(msg)
        if burst < 1:
            msg = f"burst must be at least 1, got {burst!r}"
            raise ValueError(msg)
        self._rate_per_s = rate_per_s
        self._burst = float(burst)
        self._clock = clock
        self._tokens = float(burst)
        self._updated = clock()

    def try_acquire(self) -> bool:
        """Take one token if there is one; return whether there was."""
        now = self._clock()
        elapsed = max(0.0, now - self._updated)
        self._updated = now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate_per_s)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return True
        return False
