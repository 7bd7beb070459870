"""Side-by-side benchmark of streams_layer and channels_redis.

``python -m bench`` starts a private Redis, runs every scenario of issue 6
against every layer in interleaved rounds (A B C A B C ...), and prints a
table of medians with min-max, lost / duplicated / out-of-order counts and
ratios to channels_redis's ``RedisChannelLayer`` and to the raw redis-py
ceiling. See ``bench/README.md``.
"""

from __future__ import annotations

__all__: list[str] = []
