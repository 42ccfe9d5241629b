"""What both stores share: column lists, migrations on disk, queries, and rows read back.

The two databases hold the same logical schema; only how a timestamp comes back differs
(PostgreSQL returns aware datetimes, SQLite ISO-8601 text), so the row readers take the
conversion as an argument. The operators' read queries are written once, with
PostgreSQL's `$n` placeholders; `qmark` turns them into SQLite's `?n`. Those with
optional criteria are built by `Where`, which puts in only the criteria given, so that
each query the database sees can use its index. Audit `before`/`after` travel as JSON
text both ways (jsonb on PostgreSQL, TEXT on SQLite).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import date, datetime
from importlib.resources import files
from typing import Any, Final

from switch.core import FINAL_STATES, Money, Participant, ParticipantStatus, PaymentState
from switch.directory import Alias, AliasStatus, AliasType, Change, Claim, ClaimState
from switch.ledger import EntryKind, JournalEntry, available_account, reserved_account
from switch.ledger.statements import Movement
from switch.store.base import (
    Approval,
    ApprovalState,
    ArchivedMessage,
    AuditRecord,
    BatchFileRecord,
    BatchFileState,
    BatchItem,
    BatchItemStatus,
    Direction,
    JournalRow,
    OperatorRole,
    OperatorToken,
    PaymentQuery,
    PaymentRecord,
    Recalled,
    StatementRecord,
)

MSG_COLS: Final = (
    "id, direction, participant, msg_type, biz_msg_id, sha256, raw, at, payment_id, "
    "in_reply_to, sent_at, batch_file"
)
"""The columns of `messages`, as written."""
MSG_SELECT: Final = MSG_COLS.replace(
    "sent_at",
    "coalesce(sent_at, (SELECT s.sent_at FROM sent_marks s WHERE s.message_id = messages.id))",
)
"""The same, as read from `messages`: the sent time is the row's own (a mark from before
the `sent_marks` table, or a message archived as sent), else its mark."""
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


def outbox_ids(messages: Iterable[ArchivedMessage]) -> list[str]:
    """The ids of `messages` that go into the outbox: outbound, not archived as sent."""
    return [m.id for m in messages if m.direction is Direction.OUT and m.sent_at is None]


def message(r: Any, ts: Timestamp) -> ArchivedMessage:
    """An archived message from a row of MSG_SELECT."""
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
        batch_file=r[11],
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


# --- the operators' side ----------------------------------------------------------------------

TOKEN_COLS: Final = "id, name, role, created_at, created_by, revoked_at, revoked_by"
AUDIT_COLS: Final = "seq, at, actor, role, action, target, before, after, approval"
AUDIT_INSERT_COLS: Final = "at, actor, role, action, target, before, after, approval"
APPROVAL_COLS: Final = (
    "id, action, participant, amount, reference, maker, created_at, expires_at, state, "
    "checker, decided_at"
)
JOURNAL_COLS: Final = "seq, at, kind, debit, credit, amount, ref"

_PLACEHOLDER: Final = re.compile(r"\$(\d+)")


def qmark(sql: str) -> str:
    """A query written with `$n` placeholders, in SQLite's `?n` spelling."""
    return _PLACEHOLDER.sub(r"?\1", sql)


def positive_limit(limit: int) -> int:
    """`limit` if it is a positive page size; ValueError otherwise."""
    if type(limit) is not int or limit < 1:
        raise ValueError(f"page size must be a positive int: {limit!r}")
    return limit


class Where:
    """The criteria of a query, numbered `$1`, `$2`, ... in the order they are added."""

    def __init__(self) -> None:
        self.conditions: list[str] = []
        self.params: list[Any] = []

    def arg(self, value: Any) -> str:
        """The placeholder of a new parameter `value`."""
        self.params.append(value)
        return f"${len(self.params)}"

    def add(self, condition: str) -> None:
        """Require `condition` (its placeholders made by `arg`)."""
        self.conditions.append(condition)

    def clause(self) -> str:
        """` WHERE ...` (empty when there is no criterion)."""
        return f" WHERE {' AND '.join(self.conditions)}" if self.conditions else ""


FINAL_IN: Final = ", ".join(f"'{s}'" for s in sorted(FINAL_STATES))
"""The final payment states as an SQL list (the payments_final_updated index's own)."""

PING: Final = "SELECT 1"
PARTICIPANTS_POSITIONS: Final = (
    "SELECT p.id, p.member_id, p.name, p.status, p.limit_minor, p.limit_currency, "
    "p.limit_exponent, q.available, q.reserved "
    "FROM participants p JOIN positions q ON q.participant = p.id ORDER BY p.id"
)
PAYMENT: Final = (
    f"SELECT {PAY_COLS} FROM payments WHERE id = $1 OR uetr = $1 ORDER BY id = $1 DESC LIMIT 1"
)
PAYMENT_MESSAGES: Final = f"""
WITH own AS (
    SELECT id FROM messages WHERE id = $1
    UNION
    SELECT id FROM messages WHERE payment_id = $2
), every AS (
    SELECT id FROM own
    UNION
    SELECT id FROM messages WHERE in_reply_to IN (SELECT id FROM own)
)
SELECT {MSG_SELECT} FROM messages WHERE id IN (SELECT id FROM every) ORDER BY at, id
"""
"""A payment's messages ($1 its inbound message, $2 its id), oldest first, once each."""
RECENT_FINALS: Final = (
    "SELECT state, reason, count(*) FROM payments "
    f"WHERE state IN ({FINAL_IN}) AND updated_at >= $1 GROUP BY state, reason"
)
TOKEN_INSERT: Final = (
    f"INSERT INTO operator_tokens ({TOKEN_COLS}, secret_sha256) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)
TOKEN_GET: Final = f"SELECT {TOKEN_COLS}, secret_sha256 FROM operator_tokens WHERE id = $1"
TOKENS: Final = f"SELECT {TOKEN_COLS} FROM operator_tokens ORDER BY created_at, id"
TOKEN_REVOKE: Final = (
    "UPDATE operator_tokens SET revoked_at = $2, revoked_by = $3 "
    f"WHERE id = $1 AND revoked_at IS NULL RETURNING {TOKEN_COLS}"
)
TOKEN_ONE: Final = f"SELECT {TOKEN_COLS} FROM operator_tokens WHERE id = $1"
AUDIT_INSERT: Final = (
    f"INSERT INTO audit_log ({AUDIT_INSERT_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
)
APPROVAL_INSERT: Final = (
    f"INSERT INTO approvals ({APPROVAL_COLS}) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)"
)
APPROVAL_GET: Final = f"SELECT {APPROVAL_COLS} FROM approvals WHERE id = $1"
APPROVAL_DECIDE: Final = (
    "UPDATE approvals SET state = $2, checker = $3, decided_at = $4 "
    f"WHERE id = $1 AND state = 'pending' RETURNING {APPROVAL_COLS}"
)
APPROVALS_DECIDE: Final = (
    "UPDATE approvals SET state = $2, checker = $3, decided_at = $4 "
    "WHERE id = $1 AND state = 'pending'"
)
"""APPROVAL_DECIDE for many at once (SQLite's executemany, which counts the rows changed)."""


def participant_row(p: Participant) -> tuple[Any, ...]:
    """A participant as (id, member_id, name, status, limit minor, currency, exponent)."""
    limit = p.limit
    return (
        p.id,
        p.member_id,
        p.name,
        str(p.status),
        None if limit is None else limit.minor,
        None if limit is None else limit.currency,
        None if limit is None else limit.exponent,
    )


def json_text(value: Mapping[str, Any] | None) -> str | None:
    """An audit `before`/`after` as JSON text (strict JSON: no NaN, no other types)."""
    if value is None:
        return None
    return json.dumps(dict(value), separators=(",", ":"), sort_keys=True, allow_nan=False)


def json_value(value: Any) -> dict[str, Any] | None:
    """An audit `before`/`after` read back (JSON text, or what a driver decoded)."""
    if value is None:
        return None
    decoded = json.loads(value) if isinstance(value, str | bytes) else value
    return dict(decoded)


def token(r: Any, ts: Timestamp) -> OperatorToken:
    """A token from a row of TOKEN_COLS."""
    return OperatorToken(
        id=r[0],
        name=r[1],
        role=OperatorRole(r[2]),
        created_at=ts(r[3]),
        created_by=r[4],
        revoked_at=None if r[5] is None else ts(r[5]),
        revoked_by=r[6],
    )


def token_row(
    t: OperatorToken, secret_sha256: str, ts: Callable[[datetime], Any]
) -> tuple[Any, ...]:
    """A token as the parameters of TOKEN_INSERT."""
    return (
        t.id,
        t.name,
        str(t.role),
        ts(t.created_at),
        t.created_by,
        None if t.revoked_at is None else ts(t.revoked_at),
        t.revoked_by,
        secret_sha256,
    )


def audit(r: Any, ts: Timestamp) -> AuditRecord:
    """An audit record from a row of AUDIT_COLS."""
    return AuditRecord(
        seq=r[0],
        at=ts(r[1]),
        actor=r[2],
        role=r[3],
        action=r[4],
        target=r[5],
        before=json_value(r[6]),
        after=json_value(r[7]),
        approval=r[8],
    )


def audit_row(a: AuditRecord, ts: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """An audit record as a row of AUDIT_INSERT_COLS (its seq is the log's to give)."""
    return (
        ts(a.at),
        a.actor,
        a.role,
        a.action,
        a.target,
        json_text(a.before),
        json_text(a.after),
        a.approval,
    )


def approval(r: Any, ts: Timestamp) -> Approval:
    """An approval from a row of APPROVAL_COLS."""
    return Approval(
        id=r[0],
        action=r[1],
        participant=r[2],
        amount=r[3],
        reference=r[4],
        maker=r[5],
        created_at=ts(r[6]),
        expires_at=ts(r[7]),
        state=ApprovalState(r[8]),
        checker=r[9],
        decided_at=None if r[10] is None else ts(r[10]),
    )


def approval_row(a: Approval, ts: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """An approval as a row of APPROVAL_COLS."""
    return (
        a.id,
        a.action,
        a.participant,
        a.amount,
        a.reference,
        a.maker,
        ts(a.created_at),
        ts(a.expires_at),
        str(a.state),
        a.checker,
        None if a.decided_at is None else ts(a.decided_at),
    )


def journal_row(r: Any, ts: Timestamp) -> JournalRow:
    """A journal row from a row of JOURNAL_COLS."""
    return JournalRow(
        seq=r[0],
        at=ts(r[1]),
        entry=JournalEntry(kind=EntryKind(r[2]), debit=r[3], credit=r[4], amount=r[5], ref=r[6]),
    )


def journal_page(before: int | None, limit: int, participant: str | None) -> tuple[str, list[Any]]:
    """The query of `Store.journal_page`, and its parameters."""
    w = Where()
    if before is not None:
        w.add(f"seq < {w.arg(before)}")
    if participant is not None:
        a, r = w.arg(available_account(participant)), w.arg(reserved_account(participant))
        w.add(f"(debit IN ({a}, {r}) OR credit IN ({a}, {r}))")
    n = w.arg(positive_limit(limit))
    return f"SELECT {JOURNAL_COLS} FROM journal{w.clause()} ORDER BY seq DESC LIMIT {n}", w.params


def audit_page(
    before: int | None,
    limit: int,
    actor: str | None,
    action: str | None,
    target: str | None,
) -> tuple[str, list[Any]]:
    """The query of `Store.audit_log`, and its parameters."""
    w = Where()
    if before is not None:
        w.add(f"seq < {w.arg(before)}")
    for column, value in (("actor", actor), ("action", action), ("target", target)):
        if value is not None:
            w.add(f"{column} = {w.arg(value)}")
    n = w.arg(positive_limit(limit))
    return f"SELECT {AUDIT_COLS} FROM audit_log{w.clause()} ORDER BY seq DESC LIMIT {n}", w.params


def approvals_page(state: ApprovalState | None, limit: int) -> tuple[str, list[Any]]:
    """The query of `Store.approvals`, and its parameters."""
    w = Where()
    if state is not None:
        w.add(f"state = {w.arg(str(state))}")
    n = w.arg(positive_limit(limit))
    return (
        f"SELECT {APPROVAL_COLS} FROM approvals{w.clause()} "
        f"ORDER BY created_at DESC, id DESC LIMIT {n}",
        w.params,
    )


def payment_search(q: PaymentQuery, ts: Callable[[datetime], Any]) -> tuple[str, list[Any]]:
    """The query of `Store.search_payments`, and its parameters (times written with `ts`)."""
    w = Where()
    if q.state is not None:
        w.add(f"state = {w.arg(str(q.state))}")
    if q.participant is not None:
        p = w.arg(q.participant)
        w.add(f"(debtor_agent = {p} OR creditor_agent = {p})")
    if q.since is not None:
        w.add(f"created_at >= {w.arg(ts(q.since))}")
    if q.until is not None:
        w.add(f"created_at < {w.arg(ts(q.until))}")
    if q.min_amount is not None:
        w.add(f"amount >= {w.arg(q.min_amount)}")
    if q.max_amount is not None:
        w.add(f"amount <= {w.arg(q.max_amount)}")
    if q.uetr is not None:
        w.add(f"uetr = {w.arg(q.uetr)}")
    if q.reason is not None:
        w.add(f"reason = {w.arg(q.reason)}")
    if q.before is not None:
        at, pid = q.before
        w.add(f"(created_at, id) < ({w.arg(ts(at))}, {w.arg(pid)})")
    n = w.arg(positive_limit(q.limit))
    return (
        f"SELECT {PAY_COLS} FROM payments{w.clause()} ORDER BY created_at DESC, id DESC LIMIT {n}",
        w.params,
    )


# --- the batch channel ----------------------------------------------------------------

BATCH_FILE_COLS: Final = (
    "id, participant, name, sha256, size, msg_id, tx_count, state, reason, info, archived, "
    "status_file, received_at, finished_at"
)
BATCH_FILE_INSERT: Final = (
    f"INSERT INTO batch_files ({BATCH_FILE_COLS}) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
)
BATCH_FILE_DUPLICATE: Final = (
    f"SELECT {BATCH_FILE_COLS} FROM batch_files "
    "WHERE participant = $1 AND state <> 'refused' AND (msg_id = $2 OR sha256 = $3) "
    "ORDER BY received_at, id LIMIT 1"
)
"""The accepted file of a participant ($1) with the MsgId $2 or the content hash $3."""
BATCH_FILE_FINISH: Final = (
    "UPDATE batch_files SET state = 'done', status_file = $2, finished_at = $3 "
    "WHERE id = $1 AND state = 'clearing'"
)
BATCH_FILES: Final = f"SELECT {BATCH_FILE_COLS} FROM batch_files ORDER BY received_at, id"
BATCH_FILES_IN: Final = (
    f"SELECT {BATCH_FILE_COLS} FROM batch_files WHERE state = $1 ORDER BY received_at, id"
)
BATCH_ITEM_COLS: Final = (
    "file_id, idx, inbound_id, payment_id, instr_id, end_to_end_id, tx_id, uetr, status, "
    "reason, info"
)
BATCH_ITEM_INDICES: Final = "SELECT idx FROM batch_items WHERE file_id = $1"
BATCH_PROGRESS: Final = f"""
SELECT count(*),
       coalesce(sum(CASE WHEN p.id IS NOT NULL AND p.state NOT IN ({FINAL_IN}) THEN 1 ELSE 0 END),
                0)
  FROM batch_items b LEFT JOIN payments p ON p.id = b.payment_id
 WHERE b.file_id = $1
"""
BATCH_STATUSES: Final = """
SELECT b.idx, b.instr_id, b.end_to_end_id, b.tx_id, b.uetr, b.payment_id, p.state, b.status,
       coalesce(p.reason, b.reason), b.info, p.updated_at
  FROM batch_items b LEFT JOIN payments p ON p.id = b.payment_id
 WHERE b.file_id = $1 AND b.idx > $2
 ORDER BY b.idx
 LIMIT $3
"""
OPEN_IN: Final = ", ".join(f"'{s}'" for s in sorted(set(PaymentState) - FINAL_STATES))
OPEN_PAYMENTS: Final = (
    f"SELECT {PAY_COLS} FROM payments WHERE state IN ({OPEN_IN}) ORDER BY created_at, id"
)
"""The payments not yet final (what the engine loads at start-up), through the
`payments_state_created` index: `state NOT IN (the final ones)` would read them all."""
ANY_INBOUND: Final = "SELECT EXISTS (SELECT 1 FROM messages WHERE direction = 'in')"
"""Whether any inbound message is archived (so message ids or hashes may be left out)."""
RECALL_PAY_COLS: Final = ", ".join("p." + c.strip() for c in PAY_COLS.split(","))


def recalled(payments: Iterable[Any], keys: Iterable[Any], ts: Timestamp) -> Recalled:
    """`Recalled` from payment rows (RECALL_PAY_COLS then the file id) and key rows
    ('m', sender, msg_id, NULL) / ('h', sender, sha256, message id)."""
    found: dict[str, PaymentRecord] = {}
    for r in payments:  # the same payment may be found by its UETR and its transaction
        if r[0] not in found:
            p = found[r[0]] = payment(r, ts)
            p.batch_file = r[17]
    msg_ids: set[tuple[str, str]] = set()
    hashes: dict[tuple[str, str], str] = {}
    for kind, a, b, c in keys:
        if kind == "m":
            msg_ids.add((a, b))
        else:
            hashes[(a, b)] = c
    return Recalled(
        msg_ids=frozenset(msg_ids), payments=list(found.values()), inbound_hashes=hashes
    )


BATCH_OPEN_PAYMENTS: Final = f"""
SELECT b.payment_id, b.file_id FROM batch_items b JOIN payments p ON p.id = b.payment_id
 WHERE p.state NOT IN ({FINAL_IN})
"""
"""Payments from batch files not yet final (the engine keeps their answers to the file)."""


def batch_file(r: Any, ts: Timestamp) -> BatchFileRecord:
    """A batch file from a row of BATCH_FILE_COLS."""
    return BatchFileRecord(
        id=r[0],
        participant=r[1],
        name=r[2],
        sha256=r[3],
        size=r[4],
        msg_id=r[5],
        tx_count=r[6],
        state=BatchFileState(r[7]),
        reason=r[8],
        info=r[9],
        archived=r[10],
        status_file=r[11],
        received_at=ts(r[12]),
        finished_at=None if r[13] is None else ts(r[13]),
    )


def batch_file_row(f: BatchFileRecord, ts: Callable[[datetime], Any]) -> tuple[Any, ...]:
    """A batch file as a row of BATCH_FILE_COLS (times written with `ts`)."""
    return (
        f.id,
        f.participant,
        f.name,
        f.sha256,
        f.size,
        f.msg_id,
        f.tx_count,
        str(f.state),
        f.reason,
        f.info,
        f.archived,
        f.status_file,
        ts(f.received_at),
        None if f.finished_at is None else ts(f.finished_at),
    )


def batch_item_row(i: BatchItem) -> tuple[Any, ...]:
    """A decided transaction of a batch file as a row of BATCH_ITEM_COLS."""
    return (
        i.file_id,
        i.index,
        i.inbound_id,
        i.payment_id,
        i.instr_id,
        i.end_to_end_id,
        i.tx_id,
        i.uetr,
        i.status,
        i.reason,
        i.info,
    )


_STATUS_OF: Final = {
    PaymentState.SETTLED: "ACSC",
    PaymentState.REJECTED: "RJCT",
    PaymentState.TIMED_OUT: "RJCT",
}


def batch_status(r: Any, ts: Timestamp) -> BatchItemStatus:
    """A line of a status file from a row of BATCH_STATUSES."""
    state = None if r[6] is None else PaymentState(r[6])
    status = r[7] if state is None else _STATUS_OF.get(state, "PDNG")
    return BatchItemStatus(
        index=r[0],
        instr_id=r[1],
        end_to_end_id=r[2],
        tx_id=r[3],
        uetr=r[4],
        payment_id=r[5],
        state=state,
        status=status,
        reason=r[8],
        info=r[9],
        updated_at=None if r[10] is None else ts(r[10]),
    )


# --- end-of-day statements ------------------------------------------------------------

STATEMENT_MOVEMENTS: Final = """
SELECT j.seq, j.at, j.kind, j.debit, j.credit, j.amount, j.ref, p.end_to_end_id, p.tx_id, p.uetr
  FROM journal j LEFT JOIN payments p ON j.kind = 'settle' AND p.id = j.ref
 WHERE j.at >= $1 AND j.at < $2 AND (j.at > $1 OR j.seq > $3)
   AND j.kind IN ('fund', 'defund', 'settle')
 ORDER BY j.at, j.seq
 LIMIT $4
"""
POSITIONS_BEFORE: Final = (
    # A participant's whole position now, and what the journal booked since $1 moved
    # into (+) and out of (-) its accounts: read in one snapshot, they give the position
    # before $1 reading only the journal since (`statements.positions_before`).
    "SELECT participant, available + reserved FROM positions",
    "SELECT credit, sum(amount) FROM journal WHERE at >= $1 GROUP BY credit",
    "SELECT debit, sum(amount) FROM journal WHERE at >= $1 GROUP BY debit",
)
STATEMENT_COLS: Final = (
    "participant, business_day, sequence, msg_id, file_name, period_from, period_to, "
    "opening, closing, entries, sha256, delivered_at"
)
STATEMENT_INSERT: Final = (
    f"INSERT INTO statements ({STATEMENT_COLS}) "
    "VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12) "
    "ON CONFLICT (participant, business_day) DO NOTHING"
)
STATEMENTS_LATEST: Final = f"""
SELECT {STATEMENT_COLS} FROM statements s
 WHERE business_day = (SELECT max(business_day) FROM statements t
                        WHERE t.participant = s.participant)
 ORDER BY participant
"""
STATEMENTS: Final = f"SELECT {STATEMENT_COLS} FROM statements ORDER BY participant, business_day"
STATEMENTS_OF: Final = (
    f"SELECT {STATEMENT_COLS} FROM statements WHERE participant = $1 ORDER BY business_day"
)


def movement(r: Any, ts: Timestamp) -> Movement:
    """A statement movement from a row of STATEMENT_MOVEMENTS."""
    return Movement(
        seq=r[0],
        at=ts(r[1]),
        entry=JournalEntry(kind=EntryKind(r[2]), debit=r[3], credit=r[4], amount=r[5], ref=r[6]),
        end_to_end_id=r[7],
        tx_id=r[8],
        uetr=r[9],
    )


def statement(r: Any, ts: Timestamp, day: Callable[[Any], date]) -> StatementRecord:
    """A statement from a row of STATEMENT_COLS."""
    return StatementRecord(
        participant=r[0],
        business_day=day(r[1]),
        sequence=r[2],
        msg_id=r[3],
        file_name=r[4],
        period_from=ts(r[5]),
        period_to=ts(r[6]),
        opening=r[7],
        closing=r[8],
        entries=r[9],
        sha256=r[10],
        delivered_at=ts(r[11]),
    )


def statement_row(
    s: StatementRecord, ts: Callable[[datetime], Any], day: Callable[[date], Any]
) -> tuple[Any, ...]:
    """A statement as a row of STATEMENT_COLS."""
    return (
        s.participant,
        day(s.business_day),
        s.sequence,
        s.msg_id,
        s.file_name,
        ts(s.period_from),
        ts(s.period_to),
        s.opening,
        s.closing,
        s.entries,
        s.sha256,
        ts(s.delivered_at),
    )
