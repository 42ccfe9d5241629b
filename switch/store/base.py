"""The store interface: what the engine persists, and how a batch commits as one.

Theory: the switch keeps its hot state (positions, open payments, duplicate keys) in
memory for speed, and the store is the system of record it is rebuilt from at start-up.
Everything one engine batch decided is written by ONE call, `commit_batch`, in ONE
database transaction: archived inbound and outbound messages (the outbound ones are also
the outbox, `sent_at` NULL until sent), new payments and payment state changes, journal
entries, the net change of each touched position (one UPDATE per position per batch,
rows locked in participant-id order), and the message ids seen. Sending happens after
the commit; `mark_sent` records it; at start-up every unsent outbox row is sent again
(receivers de-duplicate by BizMsgIdr), so a crash anywhere loses and duplicates nothing.
Nothing is ever deleted.
"""

from __future__ import annotations

import abc
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum

from switch.core import Participant, ParticipantStatus, PaymentState
from switch.directory import Change
from switch.ledger import ConservationReport, JournalEntry, Position, PositionDelta


class Direction(StrEnum):
    """Which way a message travelled through the switch."""

    IN = "in"
    OUT = "out"


@dataclass(frozen=True, slots=True, kw_only=True)
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


@dataclass(frozen=True, slots=True, kw_only=True)
class PaymentUpdate:
    """A state change of an existing payment."""

    id: str
    state: PaymentState
    reason: str | None
    updated_at: datetime
    deadline: datetime | None


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
    async def load_state(self) -> State:
        """Everything the engine needs to resume."""

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
