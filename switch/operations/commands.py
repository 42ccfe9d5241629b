"""Operator commands, decided on the engine's book and participant list: no I/O.

Theory. The engine keeps positions and participant statuses in memory and is the only
writer of both, so an operator's change goes through it like a message does: the
operator API hands the engine an `OperatorCommand`, the engine `decide`s it inside its
loop on its current book and participants, and commits what came out (journal entries,
participant rows, the audit record, the approval's decision) in the same transaction
as the batch it joined. A refused command changes nothing and raises `Refused` with a
stable code, the HTTP status it answers, and the field at fault.

`decide` moves the book itself (fund, defund) and returns the rest for the engine to
apply and commit. Before/after in the audit record are the participant's row and
position as they were and became.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from enum import StrEnum
from typing import Any, Final

from switch.core import InsufficientPosition, Money, Participant, ParticipantStatus, format_minor
from switch.ledger import Book, JournalEntry, Position

__all__ = [
    "ACTIONS",
    "Action",
    "Decision",
    "OperatorCommand",
    "Refused",
    "cannot_defund",
    "decide",
    "participant_view",
]


class Action(StrEnum):
    """What an operator command does (also its audit action)."""

    FUND = "position.fund"
    DEFUND = "position.defund"
    SUSPEND = "participant.suspend"
    RESUME = "participant.resume"
    ONBOARD = "participant.onboard"
    SET_LIMIT = "participant.limit"


ACTIONS: Final = frozenset(Action)


class Refused(Exception):
    """A command or request the switch refuses: code, HTTP status, and the field at fault."""

    def __init__(self, status: int, code: str, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.status = status
        self.code = code
        self.detail = detail
        self.field = field


@dataclass(frozen=True, slots=True, kw_only=True)
class OperatorCommand:
    """One change an operator asked for (after authorisation and, if needed, approval)."""

    action: Action
    participant: str
    actor: str
    """The operator's name (the token's), as the audit log records it."""
    role: str
    amount: int | None = None
    """Fund and defund: minor units of the scheme currency (> 0)."""
    reference: str = ""
    limit: Money | None = None
    """Set limit: the new per-payment limit (None removes it)."""
    new: Participant | None = None
    """Onboard: the participant to register."""
    approval: str | None = None
    """The approval this command carries out (maker-checker), if any."""
    checker: str | None = None
    checker_role: str | None = None
    """The second operator who approved it, and that operator's role."""


@dataclass(slots=True, kw_only=True)
class Decision:
    """What the engine applies and commits for one command."""

    journal: list[JournalEntry] = field(default_factory=list)
    participant: Participant | None = None
    """The participant row as it now is, to store (onboard, status or limit changed)."""
    status_changed: bool = False
    before: dict[str, Any] | None = None
    after: dict[str, Any] | None = None


def cannot_defund(participant: str, available: int, amount: int, exponent: int) -> Refused:
    """The refusal of defunding `amount` from a participant with only `available`."""
    return Refused(
        409,
        "insufficient_position",
        f"{participant} has {format_minor(available, exponent)} available; "
        f"cannot defund {format_minor(amount, exponent)}",
        field="amount",
    )


def participant_view(p: Participant, position: Position | None, exponent: int) -> dict[str, Any]:
    """A participant and its position as the audit log and the API show them."""
    view: dict[str, Any] = {
        "id": p.id,
        "member_id": p.member_id,
        "name": p.name,
        "status": str(p.status),
        "limit": None if p.limit is None else str(p.limit.to_decimal()),
    }
    if position is not None:
        view["available"] = format_minor(position.available, exponent)
        view["reserved"] = format_minor(position.reserved, exponent)
    return view


def decide(
    cmd: OperatorCommand,
    book: Book,
    participants: Mapping[str, Participant],
    *,
    exponent: int,
    now: datetime,
) -> Decision:
    """Decide `cmd` on the engine's `book` and `participants`; Refused changes nothing."""
    if cmd.action is Action.ONBOARD:
        return _onboard(cmd, book, participants, exponent)
    current = participants.get(cmd.participant)
    if current is None or cmd.participant not in book:
        raise Refused(
            404,
            "unknown_participant",
            f"{cmd.participant} is not a participant of the scheme",
            field="participant",
        )
    before = participant_view(current, book.position(cmd.participant), exponent)
    decision = Decision(before=before)
    if cmd.action in (Action.FUND, Action.DEFUND):
        amount = cmd.amount
        if amount is None or type(amount) is not int or amount <= 0:
            raise Refused(422, "invalid_amount", "the amount must be positive", field="amount")
        ref = cmd.reference or f"{cmd.action.value.split('.')[1]} by {cmd.actor}"
        if cmd.action is Action.FUND:
            decision.journal = book.fund(cmd.participant, amount, ref)
        else:
            try:
                decision.journal = book.defund(cmd.participant, amount, ref)
            except InsufficientPosition:
                have = book.position(cmd.participant).available
                raise cannot_defund(cmd.participant, have, amount, exponent) from None
    elif cmd.action is Action.SUSPEND:
        if current.status is ParticipantStatus.SUSPENDED:
            raise Refused(409, "already_suspended", f"{current.id} is already suspended")
        decision.participant = replace(current, status=ParticipantStatus.SUSPENDED)
        decision.status_changed = True
    elif cmd.action is Action.RESUME:
        if current.status is not ParticipantStatus.SUSPENDED:
            raise Refused(409, "not_suspended", f"{current.id} is {current.status}, not suspended")
        decision.participant = replace(current, status=ParticipantStatus.ACTIVE)
        decision.status_changed = True
    elif cmd.action is Action.SET_LIMIT:
        if cmd.limit == current.limit:
            raise Refused(409, "no_change", f"{current.id} already has that limit", field="limit")
        decision.participant = replace(current, limit=cmd.limit)
    else:  # pragma: no cover - every Action is handled above
        raise AssertionError(cmd.action)
    shown = decision.participant or current
    decision.after = participant_view(shown, book.position(cmd.participant), exponent)
    return decision


def _onboard(
    cmd: OperatorCommand, book: Book, participants: Mapping[str, Participant], exponent: int
) -> Decision:
    new = cmd.new
    if new is None:
        raise Refused(422, "invalid_request", "onboarding needs the participant", field="body")
    if new.id in participants or new.id in book:
        raise Refused(409, "participant_exists", f"{new.id} is already a participant", field="id")
    for p in participants.values():
        if p.member_id == new.member_id:
            raise Refused(
                409,
                "member_id_taken",
                f"member id {new.member_id} belongs to {p.id}",
                field="member_id",
            )
    book.open(new.id)
    return Decision(
        participant=new,
        after=participant_view(new, book.position(new.id), exponent),
    )
