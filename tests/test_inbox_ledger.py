"""The inbox read ledger of one layer instance (no Redis involved)."""

from __future__ import annotations

from streams_layer.inbox import ReadLedger


def test_a_lost_read_is_fetched_by_a_reader_running_alone() -> None:
    ledger = ReadLedger()
    ledger.start()
    ledger.seen(b"5-1")
    ledger.seen(b"4-9")  # an older batch taken in later (another loop) moves nothing back
    assert ledger.last_seen == b"5-1"
    assert ledger.take_recovery() is False  # nothing lost
    ledger.read_lost()
    assert ledger.take_recovery() is True
    assert ledger.take_recovery() is False  # taken once


def test_a_lost_read_is_given_up_while_another_loop_reads() -> None:
    """Its gap may hold entries the other reader is delivering right now:
    fetching them could deliver them twice."""
    ledger = ReadLedger()
    ledger.start()
    ledger.start()
    ledger.read_lost()
    assert ledger.take_recovery() is False
    ledger.stop()
    assert ledger.take_recovery() is False  # given up, not kept for later


def test_flush_forgets_what_was_read() -> None:
    ledger = ReadLedger()
    ledger.seen(b"7-0")
    ledger.read_lost()
    ledger.reset()
    assert ledger.last_seen is None
    assert ledger.take_recovery() is False
