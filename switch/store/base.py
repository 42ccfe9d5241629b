"""The store interface: what the engine persists, and how a batch commits as one.

Theory: the switch keeps its hot state (positions, open payments, duplicate keys) in
memory for speed, and the store is the system of record it is rebuilt from at start-up.
Everything one engine batch decided is written by ONE call, `commit_batch`, in ONE
database transaction: archived inbound and outbound messages (each outbound one also
gets a row of the outbox table until it is sent), new payments and payment state
changes, journal entries, the net change of each touched position (one UPDATE per
position per batch, rows locked in participant-id order), and the message ids seen.
Sending happens after the commit; `mark_sent` (or the next batch) records it, taking the
messages out of the outbox into the insert-only `sent_marks`; archived messages are never
updated. At start-up every message still in the outbox is sent again (receivers
de-duplicate by BizMsgIdr), so a crash anywhere loses and duplicates nothing. Nothing is
ever deleted but outbox rows.

The operators' side lives in the same database: operator tokens (only the SHA-256 of
each secret is kept), the audit log of what operators did (append-only, like the
journal), and the fund/defund approvals that one operator makes and another checks. A
batch that carries out an operator command commits its participants, approval decisions
and audit records with everything else it decided, so the record of a change and the
change itself commit together or not at all. The read queries the operators need
(payment search, a payment's messages, journal and audit pages) page newest first by a
keyset cursor, never by offset, so a page costs the same wherever it starts.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import Any

from switch.core import Participant, ParticipantStatus, PaymentState
from switch.directory import Change
from switch.ledger import ConservationReport, JournalEntry, Position, PositionDelta
from switch.ledger.statements import Movement
from switch.operations.access import Role
from switch.records import record


class Direction(StrEnum):
    """Which way a message travelled through the switch."""

    IN = "in"
    OUT = "out"


@record
class ArchivedMessage:
    """One message exactly as it was on the wire, with its SHA-256 (hex)."""

    id: str
    direction: Direction
    participant: str
    msg_type: str
    biz_msg_id: str | None
    sha256: str
    raw: bytes
    at: datetime
    payment_id: str | None = None
    in_reply_to: str | None = None
    sent_at: datetime | None = None
    batch_file: str | None = None
    """The batch file an inbound transaction was split from (its id). Such a message is
    no resend candidate on its own (`State.inbound_hashes`): a file is refused as a
    resend as a whole, by its MsgId or content hash."""


@dataclass(slots=True, kw_only=True)
class PaymentRecord:
    """A payment the switch accepted for clearing (or rejected on receipt), and its state.

    `debtor_named_by` / `creditor_named_by` record whether the debtor agent named each agent
    by BICFI or by USABA member id, so answers name them in kind.
    """

    id: str
    uetr: str
    msg_id: str
    instr_id: str | None
    end_to_end_id: str
    tx_id: str | None
    debtor_agent: str
    creditor_agent: str | None
    amount: int
    state: PaymentState
    reason: str | None
    created_at: datetime
    updated_at: datetime
    deadline: datetime | None
    inbound_id: str
    debtor_named_by: str = "BICFI"
    creditor_named_by: str = "BICFI"
    batch_file: str | None = None
    """The batch file the payment came from (its debtor agent's answer is the status
    file); kept in `batch_items`, not in the payment's row."""


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentUpdate:
    """A state change of an existing payment."""

    id: str
    state: PaymentState
    reason: str | None
    updated_at: datetime
    deadline: datetime | None


OperatorRole = Role
"""What an operator token may do (`switch.operations.access.Role`)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class OperatorToken:
    """An operator's bearer token as stored (its secret is kept only as a SHA-256)."""

    id: str
    name: str
    role: OperatorRole
    created_at: datetime
    created_by: str | None
    revoked_at: datetime | None = None
    revoked_by: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    """One thing an operator (or the switch on an operator's behalf) did.

    `before` and `after` are the target as it was and as it became, as JSON objects
    (None where there was nothing); `approval` names the approval the action belongs
    to. `seq`, the record's place in the log, is set when it is read back.
    """

    at: datetime
    actor: str
    role: str
    action: str
    target: str
    before: Mapping[str, Any] | None
    after: Mapping[str, Any] | None
    approval: str | None = None
    seq: int | None = None


class ApprovalState(StrEnum):
    """Where a maker-checker approval is: pending until decided once."""

    PENDING = "pending"
    APPROVED = "approved"
    REJECTED = "rejected"
    EXPIRED = "expired"


@dataclass(frozen=True, slots=True, kw_only=True)
class Approval:
    """A funding or defunding made by one operator (`maker`) that another must check."""

    id: str
    action: str
    """Either "fund" or "defund"."""
    participant: str
    amount: int
    """Minor units of the scheme currency, > 0."""
    reference: str
    maker: str
    created_at: datetime
    expires_at: datetime
    state: ApprovalState = ApprovalState.PENDING
    checker: str | None = None
    decided_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class ApprovalDecision:
    """The decision on a pending approval (it takes effect only if it is still pending)."""

    id: str
    state: ApprovalState
    checker: str
    at: datetime


@dataclass(frozen=True, slots=True, kw_only=True)
class JournalRow:
    """A journal entry with its place in the journal and when it was written."""

    seq: int
    at: datetime
    entry: JournalEntry


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentQuery:
    """What an operator searches payments by; every criterion given must hold.

    `participant` matches the debtor or the creditor agent; `since` and `until` bound
    `created_at` (`since` <= created_at < `until`); `min_amount` and `max_amount` are
    inclusive, in minor units. Results come newest first (created_at, then id,
    descending); `before`, the (created_at, id) of the last row of the previous page,
    starts the next page after it.
    """

    state: PaymentState | None = None
    participant: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    min_amount: int | None = None
    max_amount: int | None = None
    uetr: str | None = None
    reason: str | None = None
    limit: int = 100
    before: tuple[datetime, str] | None = None


class BatchFileState(StrEnum):
    """Where a batch file taken from the SFTP drop is."""

    CLEARING = "clearing"
    """Accepted: its transactions are being cleared."""
    DONE = "done"
    """Every transaction is final and the status file is in the participant's outbox."""
    REFUSED = "refused"
    """Refused as a whole (its status file says why); nothing in it was cleared."""


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchFileRecord:
    """A batch file the switch took from a participant's inbox, accepted or refused."""

    id: str
    participant: str
    name: str
    """The file's name as the participant completed it in its inbox."""
    sha256: str
    size: int
    msg_id: str | None
    """GrpHdr/MsgId; None when the file could not be read that far."""
    tx_count: int
    state: BatchFileState
    received_at: datetime
    archived: str
    """Where the original is kept, unchanged: its name in the participant's archive."""
    reason: str | None = None
    """Why the file was refused (an ISO reason code, or "unusable")."""
    info: str | None = None
    status_file: str | None = None
    finished_at: datetime | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchItem:
    """How one transaction of an accepted batch file was decided (committed with its batch).

    Either it became the payment `payment_id` (whose state is the transaction's status
    from then on), or it was refused before it could become one: `status` RJCT with
    `reason` (DUPL, FF01, ...) and `info`.
    """

    file_id: str
    index: int
    inbound_id: str
    payment_id: str | None
    instr_id: str | None
    end_to_end_id: str | None
    tx_id: str | None
    uetr: str | None
    status: str | None = None
    reason: str | None = None
    info: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class BatchItemStatus:
    """A transaction of a batch file with its status now (a line of the status file)."""

    index: int
    instr_id: str | None
    end_to_end_id: str | None
    tx_id: str | None
    uetr: str | None
    payment_id: str | None
    state: PaymentState | None
    """The payment's state; None for a transaction refused before it became one."""
    status: str
    """ACSC (settled), RJCT (rejected or timed out), or PDNG (not final yet)."""
    reason: str | None
    info: str | None
    updated_at: datetime | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StatementRecord:
    """A participant's end-of-day statement, recorded once it is in the participant's outbox."""

    participant: str
    business_day: date
    sequence: int
    """The participant's statements counted from 1 (camt.053 ElctrncSeqNb)."""
    msg_id: str
    file_name: str
    """Its name in the participant's outbox and archive."""
    period_from: datetime
    period_to: datetime
    opening: int
    closing: int
    entries: int
    sha256: str
    delivered_at: datetime


@dataclass(slots=True, kw_only=True)
class Batch:
    """Everything one engine batch decided; committed atomically by `Store.commit_batch`."""

    messages: list[ArchivedMessage] = field(default_factory=list)
    new_payments: list[PaymentRecord] = field(default_factory=list)
    updates: list[PaymentUpdate] = field(default_factory=list)
    journal: list[JournalEntry] = field(default_factory=list)
    deltas: dict[str, PositionDelta] = field(default_factory=dict)
    msg_ids: list[tuple[str, str]] = field(default_factory=list)
    """(sender participant id, GrpHdr/MsgId) pairs seen in this batch."""
    sent: list[str] = field(default_factory=list)
    """Outbound messages of earlier batches handed to the transport since (`mark_sent`)."""
    sent_at: datetime | None = None
    statuses: list[tuple[str, ParticipantStatus]] = field(default_factory=list)
    """Participant status changes (sign-on/off by admi.004), in order."""
    directory_notified: int | None = None
    """The directory change (seq) up to which the participants have now been told."""
    participants: list[Participant] = field(default_factory=list)
    """Participants created or changed (as `Store.upsert_participants`), written first."""
    approvals: list[ApprovalDecision] = field(default_factory=list)
    """Decisions on pending approvals; one that is no longer pending refuses the batch."""
    audit: list[AuditRecord] = field(default_factory=list)
    """Audit records of what the batch carries out, written last."""
    batch_items: list[BatchItem] = field(default_factory=list)
    """Transactions of batch files decided in this batch (a duplicate refuses the batch)."""

    def is_empty(self) -> bool:
        """True when the batch would write nothing."""
        return not (
            self.messages
            or self.new_payments
            or self.updates
            or self.journal
            or self.deltas
            or self.msg_ids
            or self.sent
            or self.statuses
            or self.directory_notified is not None
            or self.participants
            or self.approvals
            or self.audit
            or self.batch_items
        )


@dataclass(frozen=True, slots=True, kw_only=True)
class State:
    """What the engine rebuilds itself from at start-up."""

    participants: Mapping[str, Participant]
    positions: Mapping[str, Position]
    funded: int
    defunded: int
    payments: Sequence[PaymentRecord]
    msg_ids: frozenset[tuple[str, str]]
    inbound_hashes: Mapping[tuple[str, str], str]
    """(sender, sha256) of every inbound message -> that message's archive id."""
    unsent: Sequence[ArchivedMessage]
    batch_payments: Mapping[str, str] = field(default_factory=dict)
    """Payments not yet final that came from a batch file: payment id -> file id."""
    partial: bool = False
    """True when final payments, message ids or inbound hashes were left out (the store
    holds some): what a message refers to that is not here is to be `recall`ed."""


@dataclass(frozen=True, slots=True, kw_only=True)
class RecallKeys:
    """What the engine asks the store about, not finding it in memory (`Store.recall`)."""

    msg_ids: Sequence[tuple[str, str]] = ()
    """(sender, GrpHdr/MsgId) of pacs.008 messages."""
    uetrs: Sequence[str] = ()
    """UETRs (lowercase) of payments: a pacs.008's own, or one a pacs.002/pacs.028 names."""
    transactions: Sequence[tuple[str, str, str]] = ()
    """(debtor agent, EndToEndId, TxId or "") of pacs.008 transactions."""
    hashes: Sequence[tuple[str, str]] = ()
    """(sender, SHA-256) of inbound messages that came on their own (not in a file)."""

    def __bool__(self) -> bool:
        return bool(self.msg_ids or self.uetrs or self.transactions or self.hashes)


@dataclass(frozen=True, slots=True, kw_only=True)
class Recalled:
    """What the store holds of `RecallKeys`."""

    msg_ids: frozenset[tuple[str, str]] = frozenset()
    payments: Sequence[PaymentRecord] = ()
    """Payments with one of the UETRs or transactions asked about (their file, if any,
    in `PaymentRecord.batch_file`)."""
    inbound_hashes: Mapping[tuple[str, str], str] = field(default_factory=dict)
    """(sender, sha256) -> the archive id of the first such inbound message."""


@dataclass(frozen=True, slots=True, kw_only=True)
class DirectorySnapshot:
    """The alias directory as stored: enough to rebuild it and to resume notifying."""

    changes: Sequence[Change]
    """The latest change of every alias and of every claim, in seq order: applied in
    that order to an empty `Directory` they rebuild the current one."""
    seq: int
    """The last change stored (0 for an empty directory)."""
    notified: int
    """The last change the participants have been told about (`Batch.directory_notified`)."""


DirectoryDecision = Callable[[Sequence[Change]], Sequence[Change]]
"""Given the changes stored since the caller last looked, the new changes to store."""


class Store(abc.ABC):
    """System of record of the switch: PostgreSQL (asyncpg) or SQLite (embedded default)."""

    @abc.abstractmethod
    async def migrate(self) -> list[str]:
        """Apply pending versioned migrations (idempotent); return the versions applied."""

    @abc.abstractmethod
    async def upsert_participants(self, participants: Iterable[Participant]) -> None:
        """Create participants (with a zero position) or update their name/status/limit."""

    @abc.abstractmethod
    async def load_state(self, *, open_only: bool = False) -> State:
        """Everything the engine needs to resume.

        `open_only`: only the payments not yet final, and no message ids or inbound hashes
        (`State.partial` says whether the store holds any): what the engine loads at
        start-up, so that it starts in a time and memory bounded by the payments in
        flight, not by the archive. The rest is `recall`ed when a message refers to it.
        """

    @abc.abstractmethod
    async def recall(self, keys: RecallKeys) -> Recalled:
        """What the store holds of `keys` (duplicate checks and references to payments
        the engine no longer keeps in memory).

        The engine asks only about what it does not hold itself, and everything it has
        decided and not yet committed it holds: what it asks about is either committed
        long since (and final, for a payment) or absent, so a recall needs no snapshot
        shared with the commits running beside it."""

    @abc.abstractmethod
    async def commit_batch(self, batch: Batch) -> None:
        """Write one batch in one transaction: all of it or (on error) none of it."""

    @abc.abstractmethod
    async def mark_sent(self, ids: Sequence[str], at: datetime) -> None:
        """Record that outbound messages `ids` were handed to the transport."""

    @abc.abstractmethod
    async def fetch_messages(self, ids: Sequence[str]) -> list[ArchivedMessage]:
        """Archived messages by id (in the order asked)."""

    @abc.abstractmethod
    async def responses_to(self, inbound_id: str, participant: str) -> list[ArchivedMessage]:
        """Outbound messages to `participant` answering inbound message `inbound_id`.

        That is those with `in_reply_to` = `inbound_id`, plus, when the inbound message
        started a payment, those to `participant` about that payment, oldest first.
        """

    @abc.abstractmethod
    async def conservation(self) -> ConservationReport:
        """Conservation measured in the database itself (positions vs funded - defunded)."""

    @abc.abstractmethod
    async def journal(self) -> list[JournalEntry]:
        """The whole journal, in order (for replay checks)."""

    @abc.abstractmethod
    async def directory_load(self) -> DirectorySnapshot:
        """The alias directory, for a process that follows it (engine, API)."""

    @abc.abstractmethod
    async def directory_changes(self, after: int) -> list[Change]:
        """The directory changes stored after seq `after`, in seq order."""

    @abc.abstractmethod
    async def directory_write(
        self, after: int, decide: DirectoryDecision
    ) -> tuple[list[Change], list[Change]]:
        """Decide and append directory changes, serialised with every other writer.

        In one transaction that holds the directory's write lock: read the changes stored
        after `after`, call `decide` with them (it raises to refuse, which writes
        nothing), and append what it returns, numbered from the last seq on (each
        change's alias and claim get that seq as their version). Returns (the changes
        read, the changes stored).
        """

    # --- the operators' side -------------------------------------------------------------

    @abc.abstractmethod
    async def ping(self) -> None:
        """One trivial query; raises if the database cannot be reached."""

    @abc.abstractmethod
    async def participants_positions(self) -> tuple[list[Participant], dict[str, Position]]:
        """Every participant (by id) and its position, read together."""

    @abc.abstractmethod
    async def journal_page(
        self, *, before: int | None = None, limit: int = 100, participant: str | None = None
    ) -> list[JournalRow]:
        """Journal entries newest first, with seq < `before` when given.

        With `participant`, only the entries that debit or credit one of its accounts
        (`<participant>:available`, `<participant>:reserved`).
        """

    @abc.abstractmethod
    async def search_payments(self, query: PaymentQuery) -> list[PaymentRecord]:
        """The payments that match `query`, newest first, at most `query.limit`."""

    @abc.abstractmethod
    async def payment(self, key: str) -> PaymentRecord | None:
        """The payment with id `key`, else the one with UETR `key`, else None."""

    @abc.abstractmethod
    async def payment_messages(self, payment: PaymentRecord) -> list[ArchivedMessage]:
        """Every archived message of a payment, oldest first (at, then id), once each.

        Its inbound message, the messages about it (`payment_id`), and the messages in
        reply to any of those.
        """

    @abc.abstractmethod
    async def recent_finals(self, since: datetime) -> dict[tuple[str, str | None], int]:
        """(state, reason) -> how many payments reached that final state at or after `since`.

        Counted by `updated_at`, which a payment in a final state no longer changes.
        """

    @abc.abstractmethod
    async def token_create(
        self, token: OperatorToken, secret_sha256: str, audit: AuditRecord
    ) -> None:
        """Store a new token and its audit record together; an id already used refuses."""

    @abc.abstractmethod
    async def token_get(self, token_id: str) -> tuple[OperatorToken, str] | None:
        """A token and the SHA-256 (hex) of its secret, or None."""

    @abc.abstractmethod
    async def tokens(self) -> list[OperatorToken]:
        """Every token, revoked ones included, oldest first."""

    @abc.abstractmethod
    async def token_revoke(
        self, token_id: str, *, at: datetime, by: str, audit: AuditRecord
    ) -> OperatorToken | None:
        """Revoke a token and write `audit` with it; the token as it now is.

        None if there is no such token. A token already revoked is returned unchanged,
        and `audit` is not written.
        """

    @abc.abstractmethod
    async def audit_log(
        self,
        *,
        before: int | None = None,
        limit: int = 100,
        actor: str | None = None,
        action: str | None = None,
        target: str | None = None,
    ) -> list[AuditRecord]:
        """Audit records newest first, with seq < `before` when given, filtered by each
        of `actor`, `action` and `target` given."""

    @abc.abstractmethod
    async def approval_create(self, approval: Approval, audit: AuditRecord) -> None:
        """Store a new approval and its audit record together."""

    @abc.abstractmethod
    async def approval_get(self, approval_id: str) -> Approval | None:
        """An approval, or None."""

    @abc.abstractmethod
    async def approvals(
        self, *, state: ApprovalState | None = None, limit: int = 100
    ) -> list[Approval]:
        """Approvals newest first (created_at, then id), those in `state` when given."""

    @abc.abstractmethod
    async def approval_decide(
        self, decision: ApprovalDecision, audit: AuditRecord
    ) -> Approval | None:
        """Decide a pending approval and write `audit` with it; the approval as decided.

        None, and nothing written, if the approval is unknown or no longer pending (so of
        two concurrent decisions exactly one takes effect).
        """

    # --- the batch channel --------------------------------------------------------------

    @abc.abstractmethod
    async def batch_file_accept(self, record: BatchFileRecord) -> BatchFileRecord | None:
        """Record an accepted file (state CLEARING); if the participant already has an
        accepted file with the same MsgId or content hash, record nothing and return that
        earlier file (the new one is a duplicate)."""

    @abc.abstractmethod
    async def batch_file_refuse(self, record: BatchFileRecord) -> None:
        """Record a file refused as a whole (state REFUSED, with its reason)."""

    @abc.abstractmethod
    async def batch_file_finish(self, file_id: str, status_file: str, at: datetime) -> None:
        """Mark an accepted file DONE: its status file is delivered."""

    @abc.abstractmethod
    async def batch_files(
        self, *, participant: str | None = None, state: BatchFileState | None = None
    ) -> list[BatchFileRecord]:
        """Batch files taken, oldest first, optionally of one participant and state."""

    @abc.abstractmethod
    async def batch_item_indices(self, file_id: str) -> set[int]:
        """The indices of the file's transactions already decided."""

    @abc.abstractmethod
    async def batch_progress(self, file_id: str) -> tuple[int, int]:
        """(transactions decided, of which payments not yet final) of a file."""

    @abc.abstractmethod
    async def batch_statuses(
        self, file_id: str, *, after: int = -1, limit: int = 5000
    ) -> list[BatchItemStatus]:
        """The file's decided transactions with index > `after`, in index order."""

    # --- end-of-day statements -----------------------------------------------------------

    @abc.abstractmethod
    async def statement_movements(
        self, start: datetime, end: datetime, *, after: int = -1, limit: int = 5000
    ) -> list[Movement]:
        """The journal's fund, defund and settle entries booked in [start, end), in booking
        order (then journal order); each settlement with the EndToEndId, TxId and UETR of
        its payment. One page of at most `limit`: the next page starts at the last
        movement's booking time, `after` its seq (entries booked at `start` with a seq
        up to `after` are left out)."""

    @abc.abstractmethod
    async def positions_before(self, at: datetime) -> dict[str, int]:
        """Each participant's whole position (available + reserved) as the journal
        entries booked before `at` left it: its position now less what was booked since
        (one snapshot), so that only the journal since `at` is read."""

    @abc.abstractmethod
    async def statements_latest(self) -> dict[str, StatementRecord]:
        """Each participant's latest statement (of its latest business day)."""

    @abc.abstractmethod
    async def statement_record(self, record: StatementRecord) -> bool:
        """Record a delivered statement; False (and nothing written) if the participant's
        statement of that business day is already recorded."""

    @abc.abstractmethod
    async def statements(self, participant: str | None = None) -> list[StatementRecord]:
        """Statements recorded, by participant then business day (of one participant)."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Release connections."""


def open_store(url: str) -> Store:
    """A store for `url`: `postgresql://...` or `sqlite:///path` (`sqlite://:memory:`)."""
    if url.startswith(("postgresql://", "postgres://")):
        from switch.store.postgres import PostgresStore

        return PostgresStore(url)
    if url.startswith("sqlite:"):
        from switch.store.sqlite import SqliteStore

        return SqliteStore(url)
    raise ValueError(f"--store: unsupported store URL {url!r} (postgresql://... or sqlite:///...)")
