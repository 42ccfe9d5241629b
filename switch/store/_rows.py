"""What both stores share: column lists, migrations on disk, and rows read back.

The two databases hold the same logical schema; only how a timestamp comes back differs
(PostgreSQL returns aware datetimes, SQLite ISO-8601 text), so the row readers take the
conversion as an argument.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import datetime
from importlib.resources import files
from typing import Any, Final

from switch.core import Money, Participant, ParticipantStatus, PaymentState
from switch.directory import Alias, AliasStatus, AliasType, Change, Claim, ClaimState
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

DIR_COLS: Final = (
    "seq, at, actor, action, kind, value, participant, account, name, status, created_at, "
    "claim_id, claim_state, claimant, claim_owner, claim_account, claim_name, "
    "claim_opened_at, claim_expires_at, claim_closed_at"
)
DIR_WIDTH: Final = 20

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


def change_row(c: Change, ts: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """A directory change as a row of DIR_COLS (times written with `ts`)."""
    a, k = c.alias, c.claim
    row: tuple[Any, ...] = (
        c.seq,
        ts(c.at),
        c.actor,
        c.action,
        str(a.kind),
        a.value,
        a.participant,
        a.account,
        a.name,
        str(a.status),
        ts(a.created_at),
    )
    if k is None:
        return row + (None,) * 9
    return (
        *row,
        k.id,
        str(k.state),
        k.claimant,
        k.owner,
        k.account,
        k.name,
        ts(k.opened_at),
        ts(k.expires_at),
        None if k.closed_at is None else ts(k.closed_at),
    )


def change(r: Any, ts: Timestamp) -> Change:
    """A directory change from a row of DIR_COLS; its alias and claim carry its seq."""
    seq, at = r[0], ts(r[1])
    kind = AliasType(r[4])
    alias = Alias(
        kind=kind,
        value=r[5],
        participant=r[6],
        account=r[7],
        name=r[8],
        status=AliasStatus(r[9]),
        version=seq,
        created_at=ts(r[10]),
        updated_at=at,
    )
    claim = None
    if r[11] is not None:
        claim = Claim(
            id=r[11],
            kind=kind,
            value=r[5],
            claimant=r[13],
            owner=r[14],
            account=r[15],
            name=r[16],
            state=ClaimState(r[12]),
            opened_at=ts(r[17]),
            expires_at=ts(r[18]),
            closed_at=None if r[19] is None else ts(r[19]),
            version=seq,
        )
    return Change(seq=seq, at=at, actor=r[2], action=r[3], alias=alias, claim=claim)


def numbered(changes: Sequence[Change], last: int) -> list[Change]:
    """`changes` as stored: numbered from `last` + 1 on (alias and claim versioned so)."""
    return [c.stored(i) for i, c in enumerate(changes, start=last + 1)]


DIR_LAST: Final = "SELECT coalesce(max(seq), 0) FROM directory_changes"
"""The last directory change stored (0 when there is none)."""
DIR_LOAD: Final = (
    f"SELECT {DIR_COLS} FROM directory_changes "
    "WHERE seq IN (SELECT version FROM aliases UNION SELECT version FROM alias_claims) "
    "ORDER BY seq"
)
