"""Adding request records to the per-minute counts in the database."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from datetime import datetime

from django.db import IntegrityError, transaction
from django.db.models import F
from django.utils import timezone

from worker.models import CountedMessage, RequestStat
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


def count_message(record: RequestRecord, *, channel: str, entry_id: str) -> bool:
    """Count one message's ``record``, unless the message was counted before.

    The count and the :class:`CountedMessage` row commit together, so a
    message handled twice (its first worker died before acknowledging it)
    counts once. Returns whether it was counted now.
    """
    with transaction.atomic():
        try:
            with transaction.atomic():
                CountedMessage.objects.create(
                    channel=channel, entry_id=entry_id, counted_at=timezone.now()
                )
        except IntegrityError:
            return False
        _add((record.minute, record.user_agent, record.client_ip), 1)
    return True


def forget_counted(*, before: datetime) -> int:
    """Delete the :class:`CountedMessage` rows written before ``before``; returns how many."""
    deleted, _ = CountedMessage.objects.filter(counted_at__lt=before).delete()
    return deleted


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
