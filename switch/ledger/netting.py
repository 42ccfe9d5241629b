"""Netting a batch of journal entries into one update per position, and replaying a journal.

A store applies a batch of payments in one database transaction. Rather than updating a
participant's position row once per entry, it nets the batch: `net_deltas` sums the
entries into one `PositionDelta` per participant, so each row is written once with the
net change. Rows are always locked in one fixed order, sorted by participant id
(`lock_order`), so that concurrent batches can never deadlock on each other's rows.

Entries against `scheme:funding` only change the funding totals, not a position;
`net_funding` gives those. Participants whose delta nets to zero are left out: their
rows need no update.

`replay` rebuilds a `Book` from a journal, from nothing, entry by entry, refusing any
entry that would drive a position negative; comparing its result with the persisted
positions cross-checks the two.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

from switch.ledger.book import Book, Position
from switch.ledger.journal import AVAILABLE, SCHEME, EntryKind, JournalEntry, split_account

__all__ = [
    "FundingDelta",
    "PositionDelta",
    "apply_deltas",
    "lock_order",
    "net_deltas",
    "net_funding",
    "replay",
]


@dataclass(frozen=True, kw_only=True, slots=True)
class PositionDelta:
    """The net change of one participant's position over a batch, in minor units."""

    d_available: int = 0
    d_reserved: int = 0


@dataclass(frozen=True, kw_only=True, slots=True)
class FundingDelta:
    """The net change of the funding totals over a batch, in minor units."""

    funded: int = 0
    defunded: int = 0


def net_deltas(entries: Iterable[JournalEntry]) -> dict[str, PositionDelta]:
    """Net change per participant, in lock order, leaving out participants netting to zero."""
    available: dict[str, int] = {}
    reserved: dict[str, int] = {}
    for entry in entries:
        amount = entry.amount
        owner, side = split_account(entry.debit)
        if owner != SCHEME:
            acc = available if side == AVAILABLE else reserved
            acc[owner] = acc.get(owner, 0) - amount
        owner, side = split_account(entry.credit)
        if owner != SCHEME:
            acc = available if side == AVAILABLE else reserved
            acc[owner] = acc.get(owner, 0) + amount
    deltas: dict[str, PositionDelta] = {}
    for p in lock_order(available.keys() | reserved.keys()):
        da, dr = available.get(p, 0), reserved.get(p, 0)
        if da or dr:
            deltas[p] = PositionDelta(d_available=da, d_reserved=dr)
    return deltas


def net_funding(entries: Iterable[JournalEntry]) -> FundingDelta:
    """How much a batch adds to the funded and defunded totals."""
    funded = defunded = 0
    for entry in entries:
        if entry.kind is EntryKind.FUND:
            funded += entry.amount
        elif entry.kind is EntryKind.DEFUND:
            defunded += entry.amount
    return FundingDelta(funded=funded, defunded=defunded)


def lock_order(participants: Iterable[str]) -> list[str]:
    """The participants, without repeats, in the one order their rows are locked: by id."""
    return sorted(set(participants))


def apply_deltas(
    positions: Mapping[str, Position], deltas: Mapping[str, PositionDelta]
) -> dict[str, Position]:
    """`positions` after `deltas` (absent participants start empty); ValueError if negative."""
    result = dict(positions)
    empty = Position()
    for p, d in deltas.items():
        old = result.get(p, empty)
        result[p] = Position(
            available=old.available + d.d_available, reserved=old.reserved + d.d_reserved
        )
    return result


def replay(entries: Iterable[JournalEntry]) -> Book:
    """The book a journal produces from nothing; InternalError if it drives one negative."""
    book = Book()
    for entry in entries:
        book.apply(entry, open_new=True)
    return book
