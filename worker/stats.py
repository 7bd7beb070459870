"""The figures shown at ``/stats/`` and ``/stats.json``."""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime, timedelta
from typing import Any

from django.db.models import Sum
from django.utils import timezone

from worker.models import RequestStat

DEFAULT_WINDOW_MINUTES = 60
TOP_SERIES = 5


def _series(
    rows: list[tuple[datetime, str, int]], minutes: list[datetime], names: list[str]
) -> dict[str, list[int]]:
    index = {minute: position for position, minute in enumerate(minutes)}
    series: dict[str, list[int]] = {name: [0] * len(minutes) for name in names}
    for minute, name, count in rows:
        if name in series and minute in index:
            series[name][index[minute]] += count
    return series


def summary(*, window_minutes: int = DEFAULT_WINDOW_MINUTES) -> dict[str, Any]:
    """Totals by user agent and by IP, and per-minute counts over the last ``window_minutes``.

    The time series cover the ``TOP_SERIES`` busiest user agents and IPs.
    """
    by_agent = list(
        RequestStat.objects.values("user_agent")
        .annotate(requests=Sum("count"))
        .order_by("-requests", "user_agent")
    )
    by_ip = list(
        RequestStat.objects.values("client_ip")
        .annotate(requests=Sum("count"))
        .order_by("-requests", "client_ip")
    )
    end = timezone.now().replace(second=0, microsecond=0)
    start = end - timedelta(minutes=window_minutes - 1)
    minutes = [start + timedelta(minutes=step) for step in range(window_minutes)]
    recent = list(
        RequestStat.objects.filter(minute__gte=start).values_list(
            "minute", "user_agent", "client_ip", "count"
        )
    )
    agent_rows = [(minute, agent, count) for minute, agent, _ip, count in recent]
    ip_rows = [(minute, ip, count) for minute, _agent, ip, count in recent]
    per_minute: defaultdict[datetime, int] = defaultdict(int)
    for minute, _agent, _ip, count in recent:
        per_minute[minute] += count
    return {
        "total": sum(row["requests"] for row in by_agent),
        "by_user_agent": [
            {"user_agent": row["user_agent"], "requests": row["requests"]} for row in by_agent
        ],
        "by_ip": [{"client_ip": row["client_ip"], "requests": row["requests"]} for row in by_ip],
        "timeline": {
            "minutes": [minute.isoformat().replace("+00:00", "Z") for minute in minutes],
            "total": [per_minute.get(minute, 0) for minute in minutes],
            "by_user_agent": _series(
                agent_rows, minutes, [row["user_agent"] for row in by_agent[:TOP_SERIES]]
            ),
            "by_ip": _series(ip_rows, minutes, [row["client_ip"] for row in by_ip[:TOP_SERIES]]),
        },
    }
