"""Prefunded settlement positions: the book, its journal, netting and replay.

Pure integer arithmetic in minor units of the scheme currency; no I/O.
"""

from switch.ledger.book import Book, BookSnapshot, ConservationReport, Position
from switch.ledger.journal import (
    FUNDING_ACCOUNT,
    EntryKind,
    JournalEntry,
    available_account,
    reserved_account,
    split_account,
)
from switch.ledger.netting import (
    FundingDelta,
    PositionDelta,
    apply_deltas,
    lock_order,
    net_deltas,
    net_funding,
    replay,
)

__all__ = [
    "FUNDING_ACCOUNT",
    "Book",
    "BookSnapshot",
    "ConservationReport",
    "EntryKind",
    "FundingDelta",
    "JournalEntry",
    "Position",
    "PositionDelta",
    "apply_deltas",
    "available_account",
    "lock_order",
    "net_deltas",
    "net_funding",
    "replay",
    "reserved_account",
    "split_account",
]
