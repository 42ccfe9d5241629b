"""The settlement journal: every movement of money as one balanced double entry.

Accounts are strings. Each participant has two: `"{participant}:available"` (what it may
spend) and `"{participant}:reserved"` (held for its payments in flight). The scheme has
one external account, `"scheme:funding"`: the central-bank money in the scheme's joint
account, the counterpart of every funding and defunding.

Convention (read this before reading any entry): a `JournalEntry` moves `amount` FROM
its `debit` account TO its `credit` account. The debit account's balance goes down by
`amount` and the credit account's goes up by the same `amount`, so every entry is
balanced by construction and the sum over all accounts never changes. The
`scheme:funding` balance is therefore `defunded - funded` (it goes negative as money is
brought into the scheme).

Each `EntryKind` has one shape, checked when an entry is built:

=========  =========================  ===========================
kind       debit (from)               credit (to)
=========  =========================  ===========================
fund       scheme:funding             P:available
defund     P:available                scheme:funding
reserve    P:available                P:reserved   (same P)
release    P:reserved                 P:available  (same P)
settle     D:reserved                 C:available  (debtor D to creditor C)
=========  =========================  ===========================
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

__all__ = [
    "AVAILABLE",
    "FUNDING_ACCOUNT",
    "RESERVED",
    "SCHEME",
    "EntryKind",
    "JournalEntry",
    "available_account",
    "reserved_account",
    "split_account",
]

SCHEME: Final = "scheme"
"""Owner part of the scheme's external account (never a participant id: not a BICFI)."""
AVAILABLE: Final = "available"
RESERVED: Final = "reserved"
FUNDING: Final = "funding"
FUNDING_ACCOUNT: Final = f"{SCHEME}:{FUNDING}"
"""The scheme's joint account at the central bank: source of funding, sink of defunding."""


class EntryKind(StrEnum):
    """Why money moved."""

    FUND = "fund"
    DEFUND = "defund"
    RESERVE = "reserve"
    RELEASE = "release"
    SETTLE = "settle"


_SHAPES: Final[Mapping[EntryKind, tuple[str, str, bool]]] = {
    # kind: (debit side, credit side, same owner on both sides)
    EntryKind.FUND: (FUNDING, AVAILABLE, False),
    EntryKind.DEFUND: (AVAILABLE, FUNDING, False),
    EntryKind.RESERVE: (AVAILABLE, RESERVED, True),
    EntryKind.RELEASE: (RESERVED, AVAILABLE, True),
    EntryKind.SETTLE: (RESERVED, AVAILABLE, False),
}


def available_account(participant: str) -> str:
    """The account of what `participant` may spend."""
    return f"{participant}:{AVAILABLE}"


def reserved_account(participant: str) -> str:
    """The account of what `participant` has reserved for payments in flight."""
    return f"{participant}:{RESERVED}"


def split_account(account: str) -> tuple[str, str]:
    """(owner, side) of an account name; ValueError if it is not one."""
    owner, sep, side = account.rpartition(":")
    if not sep or not owner:
        raise ValueError(f"not an account name: {account!r}")
    return owner, side


@dataclass(frozen=True, kw_only=True, slots=True)
class JournalEntry:
    """`amount` minor units moved FROM account `debit` TO account `credit`, for `ref`."""

    debit: str
    credit: str
    amount: int
    kind: EntryKind
    ref: str

    def __post_init__(self) -> None:
        amount = self.amount
        if type(amount) is not int or amount <= 0:
            raise ValueError(f"journal amount must be a positive int: {amount!r}")
        kind = self.kind
        if type(kind) is not EntryKind:
            kind = EntryKind(kind)
            object.__setattr__(self, "kind", kind)
        debit_owner, _, debit_side = self.debit.rpartition(":")
        credit_owner, _, credit_side = self.credit.rpartition(":")
        want_debit, want_credit, same_owner = _SHAPES[kind]
        if (
            debit_side != want_debit
            or credit_side != want_credit
            or not debit_owner
            or not credit_owner
            or (same_owner and debit_owner != credit_owner)
            or (debit_owner == SCHEME) != (debit_side == FUNDING)
            or (credit_owner == SCHEME) != (credit_side == FUNDING)
        ):
            raise ValueError(f"a {kind} entry cannot move {self.debit} -> {self.credit}")
