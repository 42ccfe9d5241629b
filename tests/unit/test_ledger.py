"""The ledger: prefunded positions, balanced journal entries, conservation, netting, replay."""

from __future__ import annotations

from dataclasses import dataclass

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from switch.core.errors import InsufficientPosition, InternalError, PeerError
from switch.ledger import (
    FUNDING_ACCOUNT,
    Book,
    EntryKind,
    JournalEntry,
    Position,
    PositionDelta,
    apply_deltas,
    lock_order,
    net_deltas,
    net_funding,
    replay,
)

A, B, C = "BNKAUS33XXX", "BNKBUS44XXX", "BNKCUS55XXX"


def book_with(**available: int) -> Book:
    """A book where participant `A`, `B`, ... (by short name) was funded `available`."""
    names = {"A": A, "B": B, "C": C}
    book = Book()
    for short, amount in available.items():
        book.open(names[short])
        if amount:
            book.fund(names[short], amount, f"fund-{short}")
    return book


# --- each operation ------------------------------------------------------------------------


def test_fund() -> None:
    book = book_with(A=0)
    [e] = book.fund(A, 1000, "op-1")
    assert e == JournalEntry(
        debit="scheme:funding",
        credit=f"{A}:available",
        amount=1000,
        kind=EntryKind.FUND,
        ref="op-1",
    )
    assert book.position(A) == Position(available=1000, reserved=0)
    assert (book.funded, book.defunded) == (1000, 0)
    assert book.conservation().ok


def test_defund() -> None:
    book = book_with(A=1000)
    [e] = book.defund(A, 400, "op-2")
    assert (e.debit, e.credit, e.amount, e.kind) == (
        f"{A}:available",
        FUNDING_ACCOUNT,
        400,
        EntryKind.DEFUND,
    )
    assert book.position(A) == Position(available=600)
    assert (book.funded, book.defunded) == (1000, 400)
    assert book.conservation().ok


def test_reserve() -> None:
    book = book_with(A=1000)
    [e] = book.reserve(A, 250, "pay-1")
    assert (e.debit, e.credit, e.amount, e.kind, e.ref) == (
        f"{A}:available",
        f"{A}:reserved",
        250,
        EntryKind.RESERVE,
        "pay-1",
    )
    assert book.position(A) == Position(available=750, reserved=250)
    assert book.conservation().ok


def test_reserve_everything() -> None:
    book = book_with(A=1000)
    book.reserve(A, 1000, "pay-1")
    assert book.position(A) == Position(available=0, reserved=1000)


def test_release() -> None:
    book = book_with(A=1000)
    book.reserve(A, 250, "pay-1")
    [e] = book.release(A, 250, "pay-1")
    assert (e.debit, e.credit, e.kind) == (f"{A}:reserved", f"{A}:available", EntryKind.RELEASE)
    assert book.position(A) == Position(available=1000, reserved=0)


def test_settle() -> None:
    book = book_with(A=1000, B=0)
    book.reserve(A, 250, "pay-1")
    [e] = book.settle(A, B, 250, "pay-1")
    assert (e.debit, e.credit, e.amount, e.kind) == (
        f"{A}:reserved",
        f"{B}:available",
        250,
        EntryKind.SETTLE,
    )
    assert book.position(A) == Position(available=750, reserved=0)
    assert book.position(B) == Position(available=250, reserved=0)
    report = book.conservation()
    assert report.ok
    assert (report.total_available, report.total_reserved) == (1000, 0)
    assert (report.funded, report.defunded, report.discrepancy) == (1000, 0, 0)


@pytest.mark.parametrize("op", ["reserve", "defund"])
def test_insufficient_position_leaves_the_book_unchanged(op: str) -> None:
    book = book_with(A=1000, B=0)
    book.reserve(A, 600, "pay-1")
    before = book.snapshot()
    with pytest.raises(InsufficientPosition) as info:
        getattr(book, op)(A, 401, "pay-2")
    assert info.value.reason == "AM04"
    assert isinstance(info.value, PeerError)
    assert "400" in str(info.value)
    assert book.snapshot() == before


@pytest.mark.parametrize(
    ("call", "match"),
    [
        (lambda b: b.release(A, 601, "x"), "cannot release"),
        (lambda b: b.settle(A, B, 601, "x"), "cannot settle"),
        (lambda b: b.reserve("ZZZZUS00XXX", 1, "x"), "unknown participant"),
        (lambda b: b.settle(A, "ZZZZUS00XXX", 1, "x"), "unknown participant"),
        (lambda b: b.fund("ZZZZUS00XXX", 1, "x"), "unknown participant"),
        (lambda b: b.fund(A, 0, "x"), "positive"),
        (lambda b: b.reserve(A, -5, "x"), "positive"),
        (lambda b: b.fund(A, 1.5, "x"), "positive"),
    ],
)
def test_impossible_operations_are_internal_errors(call: object, match: str) -> None:
    book = book_with(A=1000, B=0)
    book.reserve(A, 600, "pay-1")
    before = book.snapshot()
    with pytest.raises(InternalError, match=match):
        call(book)  # type: ignore[operator]
    assert book.snapshot() == before


def test_snapshot_is_an_immutable_copy() -> None:
    book = book_with(A=1000)
    snap = book.snapshot()
    book.reserve(A, 10, "pay-1")
    assert snap.positions[A] == Position(available=1000)
    with pytest.raises(TypeError):
        snap.positions[A] = Position()  # type: ignore[index]
    with pytest.raises(AttributeError):
        snap.funded = 0  # type: ignore[misc]


def test_from_positions_restores_a_book() -> None:
    book = book_with(A=1000, B=500)
    book.reserve(A, 100, "pay-1")
    book.defund(B, 200, "op-9")
    snap = book.snapshot()
    restored = Book.from_positions(snap.positions, funded=snap.funded, defunded=snap.defunded)
    assert restored == book
    assert restored.conservation().ok
    restored.settle(A, B, 100, "pay-1")
    assert restored.position(B) == Position(available=400)


def test_conservation_detects_a_broken_restore() -> None:
    book = Book.from_positions({A: Position(available=100)}, funded=90)
    report = book.conservation()
    assert not report.ok
    assert report.discrepancy == 10


def test_open_is_idempotent_and_refuses_non_participants() -> None:
    book = book_with(A=100)
    book.open(A)
    assert book.position(A) == Position(available=100)
    for bad in ("", "scheme", "x:available"):
        with pytest.raises(InternalError):
            book.open(bad)


# --- journal entries -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("debit", "credit", "kind"),
    [
        (f"{A}:available", f"{A}:reserved", EntryKind.FUND),
        (FUNDING_ACCOUNT, f"{A}:reserved", EntryKind.FUND),
        (f"{A}:available", f"{B}:reserved", EntryKind.RESERVE),
        (f"{A}:reserved", f"{B}:available", EntryKind.RELEASE),
        (f"{A}:available", f"{B}:available", EntryKind.SETTLE),
        (f"{A}:available", "other:funding", EntryKind.DEFUND),
        ("scheme:available", f"{A}:reserved", EntryKind.RESERVE),
        ("nocolon", f"{A}:available", EntryKind.FUND),
    ],
)
def test_journal_entry_shape_is_checked(debit: str, credit: str, kind: EntryKind) -> None:
    with pytest.raises(ValueError):
        JournalEntry(debit=debit, credit=credit, amount=1, kind=kind, ref="r")


@pytest.mark.parametrize("amount", [0, -1, True, 1.0])
def test_journal_amount_is_a_positive_int(amount: object) -> None:
    with pytest.raises(ValueError, match="positive int"):
        JournalEntry(
            debit=f"{A}:available",
            credit=f"{A}:reserved",
            amount=amount,  # type: ignore[arg-type]
            kind=EntryKind.RESERVE,
            ref="r",
        )


# --- netting and replay --------------------------------------------------------------------


def test_net_deltas_of_a_batch() -> None:
    book = book_with(A=1000, B=300, C=0)
    batch = [
        *book.reserve(A, 100, "p1"),
        *book.reserve(A, 50, "p2"),
        *book.settle(A, B, 100, "p1"),
        *book.release(A, 50, "p2"),
        *book.reserve(B, 30, "p3"),
        *book.fund(C, 7, "op"),
    ]
    deltas = net_deltas(batch)
    assert deltas == {
        A: PositionDelta(d_available=-100, d_reserved=0),
        B: PositionDelta(d_available=70, d_reserved=30),
        C: PositionDelta(d_available=7, d_reserved=0),
    }
    assert list(deltas) == lock_order([C, A, B, A])
    assert net_funding(batch).funded == 7


def test_net_deltas_leaves_out_zero_deltas() -> None:
    book = book_with(A=1000)
    batch = [*book.reserve(A, 100, "p1"), *book.release(A, 100, "p1")]
    assert net_deltas(batch) == {}


def test_lock_order_is_sorted_and_unique() -> None:
    assert lock_order([C, A, B, A, C]) == [A, B, C]


def test_replay_refuses_an_overdraft() -> None:
    entries = [
        JournalEntry(
            debit=f"{A}:available",
            credit=f"{A}:reserved",
            amount=1,
            kind=EntryKind.RESERVE,
            ref="p",
        )
    ]
    with pytest.raises(InternalError, match="negative"):
        replay(entries)


# --- property: any sequence of operations ----------------------------------------------------

PARTICIPANTS = [A, B, C]


@dataclass(frozen=True)
class Op:
    name: str
    p: str
    q: str
    amount: int


ops = st.builds(
    Op,
    name=st.sampled_from(["fund", "defund", "reserve", "release", "settle"]),
    p=st.sampled_from(PARTICIPANTS),
    q=st.sampled_from(PARTICIPANTS),
    amount=st.integers(min_value=1, max_value=100),
)
"""Small amounts, and funding ten times larger, so that most operations succeed."""


def run(book: Book, op: Op, ref: str) -> list[JournalEntry]:
    if op.name == "fund":
        return book.fund(op.p, op.amount * 10, ref)
    if op.name == "settle":
        return book.settle(op.p, op.q, op.amount, ref)
    method = getattr(book, op.name)
    result: list[JournalEntry] = method(op.p, op.amount, ref)
    return result


def balance(entries: list[JournalEntry]) -> dict[str, int]:
    """Every account's balance under FROM-debit-TO-credit."""
    out: dict[str, int] = {}
    for e in entries:
        out[e.debit] = out.get(e.debit, 0) - e.amount
        out[e.credit] = out.get(e.credit, 0) + e.amount
    return out


@settings(max_examples=300, deadline=None)
@given(
    first=st.lists(ops, max_size=40),
    batch=st.lists(ops, max_size=40),
)
def test_any_sequence_keeps_the_ledger_sound(first: list[Op], batch: list[Op]) -> None:
    book = Book()
    for p in PARTICIPANTS:
        book.open(p)
    journal: list[JournalEntry] = []
    batch_entries: list[JournalEntry] = []
    start = None
    for i, op in enumerate([*first, *batch]):
        if i == len(first):
            start = book.snapshot()
        before = book.snapshot()
        try:
            entries = run(book, op, f"ref-{i}")
        except (InsufficientPosition, InternalError):
            assert book.snapshot() == before  # failed: nothing changed
            continue
        assert len(entries) == 1
        journal += entries
        if i >= len(first):
            batch_entries += entries
        report = book.conservation()
        assert report.ok, report
        for p in PARTICIPANTS:
            pos = book.position(p)
            assert pos.available >= 0
            assert pos.reserved >= 0
    if start is None:
        start = book.snapshot()

    # every entry is balanced, so the whole journal sums to zero
    balances = balance(journal)
    assert sum(balances.values()) == 0
    assert balances.get(FUNDING_ACCOUNT, 0) == book.defunded - book.funded
    for p in PARTICIPANTS:
        pos = book.position(p)
        assert balances.get(f"{p}:available", 0) == pos.available
        assert balances.get(f"{p}:reserved", 0) == pos.reserved

    # the journal re-derives the book (participants never touched are simply absent)
    replayed = replay(journal)
    final = book.snapshot()
    assert replayed.funded == final.funded
    assert replayed.defunded == final.defunded
    for p in PARTICIPANTS:
        expected = final.positions[p]
        if p in replayed:
            assert replayed.position(p) == expected
        else:
            assert expected == Position()
    for p in PARTICIPANTS:
        replayed.open(p)
    assert replayed == book

    # the batch's net deltas take the starting positions to the final ones
    deltas = net_deltas(batch_entries)
    assert list(deltas) == sorted(deltas)
    assert apply_deltas(start.positions, deltas) == dict(final.positions)
    funding = net_funding(batch_entries)
    assert start.funded + funding.funded == final.funded
    assert start.defunded + funding.defunded == final.defunded
