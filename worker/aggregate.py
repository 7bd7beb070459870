"""Adding request records to the per-minute counts in the database."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import F

from worker.models import RequestStat
from worker.records import RequestRecord

RowKey = tuple[datetime, str, str]


def record_requests(records: Iterable[RequestRecord]) -> int:
    """Count ``records`` into :class:`RequestStat` rows in one transaction.

    Safe against other processes adding to the same rows at the same time.
    Returns the number of records counted.
    """
    counts: Counter[RowKey] = Counter(
        (record.minute, record.user_agent, record.client_ip) for record in records
    )
    with transaction.atomic():
        for key, count in counts.items():
            _add(key, count)
    return sum(counts.values())


def _add(key: RowKey, count: int) -> None:
    minute, user_agent, client_ip = key
    rows = RequestStat.objects.filter(minute=minute, user_agent=user_agent, client_ip=client_ip)
    if rows.update(count=F("count") + count):
        return
    try:
        with transaction.atomic():
            RequestStat.objects.create(
                minute=minute, user_agent=user_agent, client_ip=client_ip, count=count
            )
    except IntegrityError:
        # Another worker created the row between our update and insert.
        rows.update(count=F("count") + count)
