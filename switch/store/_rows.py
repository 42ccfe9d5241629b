"""What both stores share: column lists, migrations on disk, and rows read back.

The two databases hold the same logical schema; only how a timestamp comes back differs
(PostgreSQL returns aware datetimes, SQLite ISO-8601 text), so the row readers take the
conversion as an argument.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from importlib.resources import files
from typing import Any, Final

from switch.core import Money, Participant, ParticipantStatus, PaymentState
from switch.store.base import ArchivedMessage, Direction, PaymentRecord

MSG_COLS: Final = (
    "id, direction, participant, msg_type, biz_msg_id, sha256, raw, at, payment_id, "
    "in_reply_to, sent_at"
)
PAY_COLS: Final = (
    "id, uetr, msg_id, instr_id, end_to_end_id, tx_id, debtor_agent, creditor_agent, amount, "
    "state, reason, created_at, updated_at, deadline, inbound_id, debtor_named_by, "
    "creditor_named_by"
)

Timestamp = Callable[[Any], datetime]


def migrations(dialect: str) -> list[tuple[str, str]]:
    """The migrations shipped for `dialect` (postgres, sqlite): (version, SQL), in order."""
    folder = files("switch.store") / "migrations" / dialect
    found = sorted((f for f in folder.iterdir() if f.name.endswith(".sql")), key=lambda f: f.name)
    return [(f.name.removesuffix(".sql"), f.read_text("utf-8")) for f in found]


def message(r: Any, ts: Timestamp) -> ArchivedMessage:
    """An archived message from a row of MSG_COLS."""
    return ArchivedMessage(
        id=r[0],
        direction=Direction(r[1]),
        participant=r[2],
        msg_type=r[3],
        biz_msg_id=r[4],
        sha256=r[5],
        raw=r[6],
        at=ts(r[7]),
        payment_id=r[8],
        in_reply_to=r[9],
        sent_at=None if r[10] is None else ts(r[10]),
    )


def payment(r: Any, ts: Timestamp) -> PaymentRecord:
    """A payment from a row of PAY_COLS."""
    return PaymentRecord(
        id=r[0],
        uetr=r[1],
        msg_id=r[2],
        instr_id=r[3],
        end_to_end_id=r[4],
        tx_id=r[5],
        debtor_agent=r[6],
        creditor_agent=r[7],
        amount=r[8],
        state=PaymentState(r[9]),
        reason=r[10],
        created_at=ts(r[11]),
        updated_at=ts(r[12]),
        deadline=None if r[13] is None else ts(r[13]),
        inbound_id=r[14],
        debtor_named_by=r[15],
        creditor_named_by=r[16],
    )


def participant(r: Any) -> Participant:
    """A participant from (id, member_id, name, status, limit minor, currency, exponent)."""
    limit = None
    if r[4] is not None:
        limit = Money(minor=r[4], currency=r[5], exponent=r[6])
    return Participant(
        id=r[0], member_id=r[1], name=r[2], status=ParticipantStatus(r[3]), limit=limit
    )
