"""The book of prefunded settlement positions, and the operations that move them.

Each participant has a `Position`: `available` (what it may spend) and `reserved` (held
for its payments in flight), both integer minor units of the scheme currency, both never
negative: the scheme is prefunded, with no overdraft and no intraday credit. The book also
keeps the running `funded` and `defunded` totals of money brought into and taken out of
the scheme, so that conservation (RULEBOOK §1) can be checked at any instant:

    sum(available) + sum(reserved) == funded - defunded

Every operation either fails before changing anything or applies completely and returns
the journal entries it produced (see `journal.py` for the FROM-debit-TO-credit
convention). A payer's shortfall raises `InsufficientPosition` (AM04), a peer error;
anything that cannot happen to a correct caller (releasing or settling more than is
reserved, an unknown participant, a non-positive amount) raises `InternalError`.

The book is a plain in-memory object: the store persists its journal and positions,
`Book.from_positions` restores it, and `netting.replay` rebuilds it from a journal.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType

from switch.core.errors import InsufficientPosition, InternalError
from switch.ledger.journal import (
    AVAILABLE,
    FUNDING_ACCOUNT,
    SCHEME,
    EntryKind,
    JournalEntry,
    available_account,
    reserved_account,
    split_account,
)

__all__ = ["Book", "BookSnapshot", "ConservationReport", "Position"]


@dataclass(frozen=True, kw_only=True, slots=True)
class Position:
    """A participant's settlement position, in minor units; neither part is ever negative."""

    available: int = 0
    reserved: int = 0

    def __post_init__(self) -> None:
        if type(self.available) is not int or self.available < 0:
            raise ValueError(f"available must be a non-negative int: {self.available!r}")
        if type(self.reserved) is not int or self.reserved < 0:
            raise ValueError(f"reserved must be a non-negative int: {self.reserved!r}")

    @property
    def total(self) -> int:
        """Available plus reserved."""
        return self.available + self.reserved


@dataclass(frozen=True, kw_only=True, slots=True)
class ConservationReport:
    """The totals of the conservation check and whether it holds."""

    total_available: int
    total_reserved: int
    funded: int
    defunded: int
    ok: bool

    @property
    def discrepancy(self) -> int:
        """Positions total minus net funding: 0 when conservation holds."""
        return self.total_available + self.total_reserved - (self.funded - self.defunded)


@dataclass(frozen=True, kw_only=True, slots=True)
class BookSnapshot:
    """An immutable copy of a book: positions by participant id and funding totals."""

    positions: Mapping[str, Position] = field(hash=False)
    funded: int
    defunded: int


class Book:
    """Mutable in-memory positions of every participant plus funding totals."""

    __slots__ = ("_accounts", "_available", "_reserved", "defunded", "funded")

    __hash__ = None  # type: ignore[assignment]  # mutable

    def __init__(self) -> None:
        self._available: dict[str, int] = {}
        self._reserved: dict[str, int] = {}
        self._accounts: dict[str, tuple[str, str]] = {}
        self.funded = 0
        self.defunded = 0

    @classmethod
    def from_positions(
        cls, positions: Mapping[str, Position], *, funded: int, defunded: int = 0
    ) -> Book:
        """A book restored from persisted positions and funding totals."""
        if funded < 0 or defunded < 0:
            raise InternalError(f"funding totals cannot be negative: {funded}, {defunded}")
        book = cls()
        for p, pos in positions.items():
            book.open(p)
            book._available[p] = pos.available
            book._reserved[p] = pos.reserved
        book.funded = funded
        book.defunded = defunded
        return book

    # --- reading ------------------------------------------------------------------------

    def open(self, participant: str) -> None:
        """Give `participant` an empty position (no-op if it has one)."""
        if participant in self._accounts:
            return
        if not participant or ":" in participant or participant == SCHEME:
            raise InternalError(f"not a participant id: {participant!r}")
        self._accounts[participant] = (
            available_account(participant),
            reserved_account(participant),
        )
        self._available[participant] = 0
        self._reserved[participant] = 0

    def __contains__(self, participant: object) -> bool:
        return participant in self._accounts

    def __iter__(self) -> Iterator[str]:
        return iter(self._accounts)

    def __len__(self) -> int:
        return len(self._accounts)

    def position(self, participant: str) -> Position:
        """The current position of `participant`."""
        self._known(participant)
        return Position(
            available=self._available[participant], reserved=self._reserved[participant]
        )

    def snapshot(self) -> BookSnapshot:
        """An immutable copy of the whole book."""
        reserved = self._reserved
        positions = {
            p: Position(available=a, reserved=reserved[p]) for p, a in self._available.items()
        }
        return BookSnapshot(
            positions=MappingProxyType(positions), funded=self.funded, defunded=self.defunded
        )

    def conservation(self) -> ConservationReport:
        """The conservation check: sum(available) + sum(reserved) == funded - defunded."""
        total_available = sum(self._available.values())
        total_reserved = sum(self._reserved.values())
        return ConservationReport(
            total_available=total_available,
            total_reserved=total_reserved,
            funded=self.funded,
            defunded=self.defunded,
            ok=total_available + total_reserved == self.funded - self.defunded,
        )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Book):
            return NotImplemented
        return (
            self._available == other._available
            and self._reserved == other._reserved
            and self.funded == other.funded
            and self.defunded == other.defunded
        )

    def __repr__(self) -> str:
        return f"Book(participants={len(self)}, funded={self.funded}, defunded={self.defunded})"

    # --- operations ---------------------------------------------------------------------

    def _known(self, participant: str) -> tuple[str, str]:
        accounts = self._accounts.get(participant)
        if accounts is None:
            raise InternalError(f"unknown participant {participant!r} in the book")
        return accounts

    @staticmethod
    def _check_amount(amount: int) -> None:
        if type(amount) is not int or amount <= 0:
            raise InternalError(f"ledger amount must be a positive int: {amount!r}")

    def fund(self, participant: str, amount: int, ref: str) -> list[JournalEntry]:
        """Bring `amount` of central-bank money into `participant`'s available position."""
        available, _ = self._known(participant)
        self._check_amount(amount)
        entry = JournalEntry(
            debit=FUNDING_ACCOUNT, credit=available, amount=amount, kind=EntryKind.FUND, ref=ref
        )
        self._available[participant] += amount
        self.funded += amount
        return [entry]

    def defund(self, participant: str, amount: int, ref: str) -> list[JournalEntry]:
        """Take `amount` out of the scheme; InsufficientPosition if it is not available."""
        available, _ = self._known(participant)
        self._check_amount(amount)
        have = self._available[participant]
        if have < amount:
            raise InsufficientPosition(
                f"available position of {participant} is {have}, cannot defund {amount}"
            )
        entry = JournalEntry(
            debit=available, credit=FUNDING_ACCOUNT, amount=amount, kind=EntryKind.DEFUND, ref=ref
        )
        self._available[participant] = have - amount
        self.defunded += amount
        return [entry]

    def reserve(self, participant: str, amount: int, ref: str) -> list[JournalEntry]:
        """Hold `amount` for payment `ref`; InsufficientPosition (AM04) if not available."""
        available, reserved = self._known(participant)
        self._check_amount(amount)
        have = self._available[participant]
        if have < amount:
            raise InsufficientPosition(
                f"available position of {participant} is {have}, payment needs {amount}"
            )
        entry = JournalEntry(
            debit=available, credit=reserved, amount=amount, kind=EntryKind.RESERVE, ref=ref
        )
        self._available[participant] = have - amount
        self._reserved[participant] += amount
        return [entry]

    def release(self, participant: str, amount: int, ref: str) -> list[JournalEntry]:
        """Give back `amount` held for payment `ref` (rejected or timed out)."""
        available, reserved = self._known(participant)
        self._check_amount(amount)
        held = self._reserved[participant]
        if held < amount:
            raise InternalError(f"{participant} has {held} reserved, cannot release {amount}")
        entry = JournalEntry(
            debit=reserved, credit=available, amount=amount, kind=EntryKind.RELEASE, ref=ref
        )
        self._reserved[participant] = held - amount
        self._available[participant] += amount
        return [entry]

    def settle(self, debtor: str, creditor: str, amount: int, ref: str) -> list[JournalEntry]:
        """Move `amount` reserved by `debtor` for payment `ref` to `creditor`'s available."""
        _, reserved = self._known(debtor)
        available, _ = self._known(creditor)
        self._check_amount(amount)
        held = self._reserved[debtor]
        if held < amount:
            raise InternalError(f"{debtor} has {held} reserved, cannot settle {amount}")
        entry = JournalEntry(
            debit=reserved, credit=available, amount=amount, kind=EntryKind.SETTLE, ref=ref
        )
        self._reserved[debtor] = held - amount
        self._available[creditor] += amount
        return [entry]

    def apply(self, entry: JournalEntry, *, open_new: bool = False) -> None:
        """Apply one journal entry; InternalError if it would drive a position negative.

        With `open_new`, participants the book does not know yet are opened first.
        """
        debit_owner, debit_side = split_account(entry.debit)
        credit_owner, credit_side = split_account(entry.credit)
        amount = entry.amount
        for owner in (debit_owner, credit_owner):
            if owner != SCHEME and owner not in self._accounts and not open_new:
                raise InternalError(f"unknown participant {owner!r} in entry {entry}")
        if debit_owner == SCHEME:
            self.funded += amount
        else:
            side = self._available if debit_side == AVAILABLE else self._reserved
            have = side.get(debit_owner, 0)
            if have < amount:
                raise InternalError(f"entry {entry} drives {entry.debit} negative")
            side[debit_owner] = have - amount
        if credit_owner == SCHEME:
            self.defunded += amount
        else:
            self.open(credit_owner)
            side = self._available if credit_side == AVAILABLE else self._reserved
            side[credit_owner] += amount
