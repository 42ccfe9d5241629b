"""The engine: drives the pure core with batches of transport messages.

Theory of operation. The engine owns the switch's hot state in memory (positions in a
`Book`, the payments in flight and the most recent final ones by id and by UETR, their
duplicate keys, the open deadlines), rebuilt from the store at start-up. What a message
refers to beyond that (an older payment, message id or inbound message) is recalled from
the store for its batch before the batch is decided, so memory and start-up time are
bounded by `engine.recent_payments` and the payments in flight, not by the archive. It
runs one loop:

1. take the deliveries the transport has (waiting only when there is nothing to do, or
   until the next deadline is due);
2. for each delivery, in arrival order: archive it, parse and validate it, and let the
   core decide (business rules, state transitions, ledger operations); every decision
   appends to one `Batch` (archived messages, payments, state changes, journal entries,
   outbound messages) and mutates the in-memory state;
3. expire the deadlines that are due (release, RJCT AB05 to both agents);
4. commit the `Batch` in ONE store transaction, positions updated once each by their net
   delta (group commit); while it commits, the next batch gathers and is decided
   (pipelining, so batches grow with load); if a commit fails the engine stops, and a
   restart rebuilds the state from the store, which is all-or-nothing per batch;
5. acknowledge the deliveries to the transport, send the outbound messages, record
   them as sent.

Operators change positions and participants through the same loop: `operate` queues an
`OperatorCommand`, the loop decides it (`switch.operations.decide`) at the start of the
next batch, on the same book and participant list as the payments, and the batch commits
it with its audit record (and, for a maker-checker approval, the approval's decision);
the caller hears the outcome once that commit is done.

Nothing is sent before it is committed, so a crash at any instant leaves, at worst,
committed messages not yet sent (sent again at start-up, receivers de-duplicate by
BizMsgIdr) and uncommitted deliveries not yet acknowledged (delivered again by the
transport). The steps of a payment are those of RULEBOOK §3, and every rejection maps to
one reason code of §4.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import heapq
import itertools
import logging
import math
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Sequence
from concurrent.futures import Executor
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypeVar

from switch import heap
from switch.core import (
    FINAL_STATES,
    AgentRef,
    InsufficientPosition,
    Participant,
    ParticipantDirectory,
    ParticipantStatus,
    PaymentEvent,
    PaymentFacts,
    PaymentState,
    RuleContext,
    check_payment,
    inquiry_status,
    next_state,
)
from switch.core.money import to_minor
from switch.directory import Alias, AliasType, Change, LookupLimiter, mask_name
from switch.directory.aliases import DirectoryError
from switch.directory_service import DirectoryService
from switch.inbound import (
    Inbound,
    TransferRefs,
    read_batch,
    read_in_reader,
    resolved,
    sign_batch,
    sign_in_reader,
    start_workers,
)
from switch.iso20022 import (
    MessageType,
    ParseLimits,
    SchemaIssue,
    build,
    default_registry,
    views,
)
from switch.iso20022.registry import SchemaRegistry
from switch.iso20022.views import Agent
from switch.latency import BATCH_SIZE_BUCKETS, STAGE_BUCKETS, LatencyHistogram
from switch.ledger import Book, JournalEntry, net_deltas
from switch.metrics import ALIAS_LOOKUPS
from switch.operations import Decision, OperatorCommand, Refused, decide
from switch.security.messages import MessageSecurity
from switch.settings import Settings
from switch.store.base import (
    ApprovalDecision,
    ArchivedMessage,
    AuditRecord,
    Batch,
    BatchItem,
    Direction,
    PaymentRecord,
    PaymentUpdate,
    RecallKeys,
    Store,
)
from switch.transport import Delivery, SwitchTransport

log = logging.getLogger("rtpswitch.engine")

T = TypeVar("T")

USABA: Final = "USABA"
BICFI: Final = "BICFI"
_YIELD_EVERY: Final = 16
_READ_OFF_LOOP: Final = 128
"""Batches at least this large are read in the reader processes (when there are any)."""
_READ_AHEAD: Final = 2
"""Batches' worth of received messages being read at once, ahead of the one decided: with
two, a reader process reads the next while the result of the one before travels back."""
_SIGN_EVENTS: Final = {"SGON": ParticipantStatus.ACTIVE, "SGOF": ParticipantStatus.SIGNED_OFF}
"""admi.004 event codes a participant sends about itself, and the state each asks for."""
ACCEPT_STATUSES: Final = frozenset({"ACSP", "ACCP", "ACSC", "ACCC", "ACWC"})
_DIRECTORY_POLL: Final = 0.25
"""Seconds between looks at the directory when no payment needs it (claims to notify)."""
CLAIM_EVENTS: Final = {
    "claim": "PCLM",
    "confirm": "PCNF",
    "reject": "PRJT",
    "complete": "PCMP",
    "cancel": "PCNL",
}
"""admi.004 event codes telling both banks about each step of a portability claim."""
_LOOKUPS_FOUND: Final = ALIAS_LOOKUPS.labels("queue", "found")
_LOOKUPS_NOT_FOUND: Final = ALIAS_LOOKUPS.labels("queue", "not_found")
_LOOKUPS_REFUSED: Final = ALIAS_LOOKUPS.labels("queue", "refused")


def utcnow() -> datetime:
    """The current instant, timezone-aware UTC."""
    return datetime.now(UTC)


class IdGenerator:
    """Unique identifiers (<= 35 characters) that stay unique across restarts."""

    def __init__(self, prefix: str) -> None:
        self._prefix = f"{prefix}{time.time_ns() // 1000:x}"
        self._n = itertools.count(1)

    def __call__(self) -> str:
        return f"{self._prefix}{next(self._n):08d}"


_Outcome = tuple[PaymentRecord | None, str | None, str | None]
"""How a pacs.008 was decided: (the payment it became, reason it was rejected, why)."""


@dataclass(slots=True)
class _Send:
    """An outbound message committed in this batch, to be sent after the commit."""

    participant: str
    message: ArchivedMessage


@dataclass(slots=True)
class _Work:
    """What one batch produced."""

    batch: Batch = field(default_factory=Batch)
    sends: list[_Send] = field(default_factory=list)
    by_inbound: dict[str, list[ArchivedMessage]] = field(default_factory=dict)
    payments: int = 0
    unsigned: dict[str, int] = field(default_factory=dict)
    """Outbound messages built in this batch, by id: their index in `batch.messages`."""
    copies: list[tuple[int, str]] = field(default_factory=list)
    """Resent copies of this batch's own answers: (index, id of the original)."""
    operated: list[tuple[asyncio.Future[Decision], Decision]] = field(default_factory=list)
    """Operator commands decided into this batch, answered once it is committed."""
    finalized: list[str] = field(default_factory=list)
    """Payments that reached a final state in this batch (candidates for eviction once
    it is committed)."""


@dataclass(slots=True, kw_only=True)
class _Command:
    """An operator command waiting for the loop."""

    cmd: OperatorCommand
    decision: ApprovalDecision | None
    future: asyncio.Future[Decision]


def _retrieved(task: asyncio.Task[Any]) -> None:
    """Retrieve the outcome of a task whose result may go unused (no warning at exit); a
    failure that matters is raised where the result is awaited."""
    if not task.cancelled():
        task.exception()


def _may_use_directory(data: bytes) -> bool:
    """Whether `data` holds bytes found in every message that needs the alias directory
    (a pacs.008 paying an alias names `CdtrAcct/Prxy`; a lookup is an acmt.023). A match
    only starts the directory query early; the message's reading decides whether it is
    used. Plain substring searches: a regular expression took five times as long."""
    return b"Prxy>" in data or b"acmt.023" in data


@dataclass(slots=True)
class _Reading:
    """A received batch on its way through reading (`Engine._start_reading`)."""

    deliveries: list[Delivery]
    prepared: asyncio.Future[list[Inbound]]
    started: float
    directory: asyncio.Task[list[Change]] | None = None
    """The directory's changes, asked for when the batch arrived, if its bytes suggest a
    payment to an alias or a lookup (see `Engine._start_reading`)."""


@dataclass(slots=True, kw_only=True)
class _Pending:
    """A batch whose commit is under way."""

    task: asyncio.Task[None]
    work: _Work
    deliveries: Sequence[Delivery]


@dataclass(slots=True)
class EngineStats:
    """Counters for monitoring and benchmarks: plain Python, cheap on the hot path.

    Read at scrape time by `switch.metrics.EngineCollector`. Messages in and out are
    counted by type as they are decided (a batch still committing is included);
    `messages_in`, `messages_out` and `batches` once a batch is committed and sent.
    """

    messages_in: int = 0
    messages_out: int = 0
    batches: int = 0
    payments: int = 0
    settled: int = 0
    rejected: int = 0
    timed_out: int = 0
    lookups: int = 0
    lookups_found: int = 0
    lookups_refused: int = 0
    """Alias lookups refused because a token bucket was empty (anti-enumeration)."""
    messages_in_by_type: Counter[str] = field(default_factory=Counter)
    """Inbound messages by type ("pacs.008", ...; "unknown" when unusable)."""
    messages_out_by_type: Counter[str] = field(default_factory=Counter)
    """Outbound messages by type, answers, notices and resent copies alike."""
    finals: Counter[tuple[str, str]] = field(default_factory=Counter)
    """Payments that reached a final state, by (state, reason or "")."""
    duplicates: int = 0
    """pacs.008 rejected DUPL (message id, UETR or end-to-end id already used)."""
    signature_failures: Counter[str] = field(default_factory=Counter)
    """Messages refused for their signature, by reason (DS0B, DS0C, DS0D)."""
    in_flight: int = 0
    """Payments forwarded to the creditor agent and not yet final."""
    end_to_end: LatencyHistogram = field(default_factory=LatencyHistogram)
    """Seconds from a payment's arrival (its batch) to its final decision (its batch)."""
    recent_latencies: deque[float] = field(default_factory=lambda: deque(maxlen=4096))
    """End-to-end seconds of the most recent final payments, for exact percentiles."""
    stage_read: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(STAGE_BUCKETS))
    """Seconds to read (parse, validate, verify) one batch's deliveries."""
    stage_decide: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(STAGE_BUCKETS))
    """Seconds to decide one batch's deliveries and due deadlines in memory."""
    stage_commit: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(STAGE_BUCKETS))
    """Seconds to sign (with message security) and commit one batch."""
    stage_send: LatencyHistogram = field(default_factory=lambda: LatencyHistogram(STAGE_BUCKETS))
    """Seconds to acknowledge one batch's deliveries and send its messages."""
    batch_size: LatencyHistogram = field(
        default_factory=lambda: LatencyHistogram(BATCH_SIZE_BUCKETS)
    )
    """Deliveries per committed batch (0 for a batch of due deadlines or notices only)."""


class Engine:
    """The clearing engine of one switch instance."""

    def __init__(
        self,
        *,
        settings: Settings,
        store: Store,
        transport: SwitchTransport,
        clock: Callable[[], datetime] = utcnow,
        registry: SchemaRegistry | None = None,
        security: MessageSecurity | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.transport = transport
        self.clock = clock
        self.registry = registry or default_registry()
        self.security = security
        self.limits = ParseLimits(max_bytes=settings.engine.max_message_bytes)
        self.timeout = timedelta(seconds=settings.response_timeout)
        rules = settings.scheme
        self.switch_by_bicfi = Agent(bicfi=rules.switch_bicfi)
        self.switch_by_member = Agent(member_id=rules.switch_member_id, clearing_system=USABA)
        self.book = Book()
        self.ctx = RuleContext(rules=rules, participants=ParticipantDirectory(()))
        self.payments: dict[str, PaymentRecord] = {}
        self.by_uetr: dict[str, PaymentRecord] = {}
        self.e2e_keys: set[tuple[str, str, str]] = set()
        self.msg_ids: set[tuple[str, str]] = set()
        self.hashes: dict[tuple[str, str], str] = {}
        self.deadlines: list[tuple[datetime, str]] = []
        self._finals: deque[str] = deque()
        """Final payments in memory, committed, oldest first (evicted from the front)."""
        self._msg_id_order: deque[tuple[str, str]] = deque()
        self._hash_order: deque[tuple[str, str]] = deque()
        """`msg_ids` and `hashes` keys in the order they entered memory (evicted likewise)."""
        self._cold = False
        """True when the store holds payments, message ids or hashes memory does not."""
        self.stats = EngineStats()
        self._ids = IdGenerator("SW")
        self._pids = IdGenerator("P")
        self._started = False
        self._unmarked: list[str] = []
        self._readers: Executor | None = None
        self.directory = DirectoryService(
            store,
            clock=clock,
            claim_period=timedelta(seconds=settings.directory.claim_period),
            claim_ids=IdGenerator("CLM"),
        )
        self.lookups = LookupLimiter(
            participant=settings.directory.participant_bucket,
            end_user=settings.directory.end_user_bucket,
        )
        self._to_notify: list[Change] = []
        self._notify_upto = 0
        self._next_directory_poll = 0.0
        self._directory_poll: tuple[asyncio.Future[list[Change]], float] | None = None
        """The directory look in flight (`_poll_directory`) and when it started."""
        self._directory_asof = -math.inf
        """When (perf_counter) the directory query last applied was started, or earlier."""
        self._commands: list[_Command] = []
        self._file_items: deque[Delivery] = deque()
        """Transactions of batch files waiting for the loop (`submit_batch`)."""
        self._ahead: tuple[list[Delivery], asyncio.Future[list[Inbound]]] | None = None
        """File transactions taken from `_file_items` and being read in a reader process
        while the batch before them is decided (see `_file_batch`)."""
        self._reading: deque[_Reading] = deque()
        """Received batches being read, in the order they arrived (see `_start_reading`)."""
        self.running = False
        """True while `run` clears (operator commands are taken only then)."""

    # --- start-up -----------------------------------------------------------------------

    async def start(self) -> None:
        """Rebuild the in-memory state from the store and send what was left unsent."""
        self.registry.load_all()
        state = await self.store.load_state(open_only=True)
        self.book = Book.from_positions(
            state.positions, funded=state.funded, defunded=state.defunded
        )
        self._set_participants(state.participants.values())
        forwarded = 0
        from_files = state.batch_payments
        self._finals.clear()
        for p in state.payments:
            self._index(p)
            if from_files:
                p.batch_file = from_files.get(p.id)
            if p.state in FINAL_STATES:
                self._finals.append(p.id)
            if p.state is PaymentState.FORWARDED:
                forwarded += 1
                if p.deadline is not None:
                    heapq.heappush(self.deadlines, (p.deadline, p.id))
        self.stats.in_flight = forwarded
        self.msg_ids = set(state.msg_ids)
        self.hashes = dict(state.inbound_hashes)
        self._msg_id_order = deque(self.msg_ids)
        self._hash_order = deque(self.hashes)
        self._cold = state.partial
        await self.directory.start()
        self._queue_notices(await self.store.directory_changes(self.directory.notified))
        if self.settings.engine.read_workers and self._readers is None:
            self._readers = await start_workers(self.settings.engine.read_workers, self.security)
        self._started = True
        # What is alive now stays for the life of the process: frozen out of the
        # collector's passes, which also run less often (see switch.heap).
        heap.settle()
        if state.unsent:
            log.info("sending %d committed messages left unsent", len(state.unsent))
            await self._send([_Send(m.participant, m) for m in state.unsent])

    def _set_participants(self, participants: Iterable[Participant]) -> None:
        plist = list(participants)
        self.ctx = RuleContext(rules=self.settings.scheme, participants=ParticipantDirectory(plist))
        for p in plist:
            self.book.open(p.id)

    def _index(self, p: PaymentRecord) -> None:
        self.payments[p.id] = p
        self.by_uetr[p.uetr] = p
        self.e2e_keys.add((p.debtor_agent, p.end_to_end_id, p.tx_id or ""))

    @property
    def open_payments(self) -> int:
        """Payments not yet in a final state."""
        return sum(1 for p in self.payments.values() if p.state is PaymentState.FORWARDED)

    # --- operator actions ---------------------------------------------------------------

    async def fund(self, participant: str, amount: int, ref: str) -> None:
        """Fund `participant`'s position by `amount` minor units (operator action)."""
        entries = self.book.fund(participant, amount, ref)
        await self._commit_entries(entries)

    @property
    def started(self) -> bool:
        """True once the state is rebuilt from the store and the schemas are loaded."""
        return self._started

    async def operate(
        self, cmd: OperatorCommand, *, decision: ApprovalDecision | None = None
    ) -> Decision:
        """Have the loop decide `cmd` and commit it with its audit record; its decision.

        `decision`: the maker-checker approval `cmd` carries out, committed with it.
        Refused (nothing changed) if the command is refused or the engine is not running.
        """
        if not self.running:
            raise Refused(503, "engine_stopped", "the clearing engine is not running")
        future: asyncio.Future[Decision] = asyncio.get_running_loop().create_future()
        self._commands.append(_Command(cmd=cmd, decision=decision, future=future))
        return await future

    def _operate(self, now: datetime, work: _Work) -> None:
        """Decide the queued operator commands into `work`."""
        commands, self._commands = self._commands, []
        for c in commands:
            cmd = c.cmd
            try:
                decision = decide(
                    cmd,
                    self.book,
                    self.ctx.directory,
                    exponent=self.settings.scheme.exponent,
                    now=now,
                )
            except Refused as exc:
                c.future.set_exception(exc)
                continue
            batch = work.batch
            batch.journal.extend(decision.journal)
            if decision.participant is not None:
                changed = decision.participant
                batch.participants.append(changed)
                others = [p for p in self.ctx.directory.values() if p.id != changed.id]
                self._set_participants([*others, changed])
            batch.audit.append(
                AuditRecord(
                    at=now,
                    actor=cmd.actor,
                    role=cmd.role,
                    action=cmd.action.value,
                    target=cmd.participant,
                    before=decision.before,
                    after=decision.after,
                    approval=cmd.approval,
                )
            )
            if c.decision is not None:
                batch.approvals.append(c.decision)
                batch.audit.append(
                    AuditRecord(
                        at=now,
                        actor=c.decision.checker,
                        role=cmd.checker_role or cmd.role,
                        action="approval.approve",
                        target=cmd.participant,
                        before={"approval": c.decision.id, "state": "pending"},
                        after={"approval": c.decision.id, "state": str(c.decision.state)},
                        approval=c.decision.id,
                    )
                )
            log.info("%s by %s on %s", cmd.action.value, cmd.actor, cmd.participant)
            work.operated.append((c.future, decision))

    def _refuse_commands(self, why: str) -> None:
        commands, self._commands = self._commands, []
        for c in commands:
            if not c.future.done():
                c.future.set_exception(Refused(503, "engine_stopped", why))

    async def _commit_entries(self, entries: list[JournalEntry]) -> None:
        batch = Batch(journal=entries, deltas=net_deltas(entries))
        await self.store.commit_batch(batch)

    # --- the batch channel --------------------------------------------------------------

    async def submit_batch(self, items: Sequence[Delivery], *, backlog: int | None = None) -> None:
        """Queue transactions of a batch file (each a Delivery with `batch` set) for clearing.

        They are decided in the clearing loop with real-time traffic, which goes first in
        every batch: a batch takes file transactions only to fill what real-time messages
        leave of it. Returns once the queue is back under `backlog` (default: two
        batches), so a large file is read no faster than it clears. Their outcomes commit
        in `batch_items` with the batch that decides them.
        """
        if any(d.batch is None for d in items):
            raise ValueError("submit_batch takes transactions of batch files only")
        self._file_items.extend(items)
        limit = 2 * self.settings.engine.batch_size if backlog is None else backlog
        while len(self._file_items) > limit:
            await asyncio.sleep(0.005)

    @property
    def batch_backlog(self) -> int:
        """Transactions of batch files queued and not yet taken by the loop."""
        return len(self._file_items) + (0 if self._ahead is None else len(self._ahead[0]))

    def _take_file_items(self, room: int) -> list[Delivery]:
        queue = self._file_items
        n = min(room, len(queue))
        return [queue.popleft() for _ in range(n)]

    async def _file_batch(self, room: int) -> tuple[list[Delivery], list[Inbound]]:
        """Up to `room` transactions of batch files, in order, read.

        With reader processes, the next batch of them is read ahead, while the current
        one is decided and committed; without, they are read here, in-line.
        """
        if self._readers is None:
            items = self._take_file_items(room)
            return items, self._read_here(items)
        if self._ahead is None:
            self._read_ahead()
            if self._ahead is None:
                return [], []
        items, reading = self._ahead
        self._ahead = None
        prepared = await reading
        got, rest = items[:room], items[room:]
        if rest:
            done: asyncio.Future[list[Inbound]] = asyncio.get_running_loop().create_future()
            done.set_result(prepared[room:])
            self._ahead = (rest, done)
        else:
            self._read_ahead()
        return got, prepared[:room]

    def _read_ahead(self) -> None:
        """Start reading the next batch of file transactions in a reader process."""
        items = self._take_file_items(self.settings.engine.batch_size)
        if not items:
            return
        assert self._readers is not None
        lines, verified = _to_read(items)
        reading = asyncio.get_running_loop().run_in_executor(
            self._readers, read_in_reader, lines, self.limits, verified
        )
        self._ahead = (items, reading)

    def _put_back_ahead(self) -> None:
        """Return the transactions read ahead to the head of the queue (at stop)."""
        if self._ahead is not None:
            items, reading = self._ahead
            self._ahead = None
            reading.cancel()
            self._file_items.extendleft(reversed(items))

    # --- the loop -----------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        """Clear until `stop` is set.

        Group commit, pipelined: while batch k commits, whatever arrives is received and
        decided in memory, on top of k's decisions, into batch k+1; when k's commit is
        done (or k+1 is full), k's messages are sent and its deliveries acknowledged,
        and k+1 starts committing, carrying the sent marks of k. Under light load a
        message commits at once; under heavy load batches grow to what arrives during
        one commit. Reading is pipelined too: a large batch is read in a reader process
        while the one received before it is decided (batches are decided in the order
        they arrived). While the loop waits on anything else (the directory, file
        transactions read ahead, a resend lookup), a commit that ends meanwhile is
        completed and the next batch starts committing at once. If a commit fails the
        engine stops: its memory is ahead of the store, and a restart rebuilds it. At
        stop, what was received is decided and committed before the loop returns.
        """
        if not self._started:
            await self.start()
        size = self.settings.engine.batch_size
        pending: _Pending | None = None
        work: _Work | None = None
        taken: list[Delivery] = []
        reading = self._reading

        async def meanwhile(step: Awaitable[T]) -> T:
            """Await `step`; a commit in flight that ends meanwhile is completed (its
            deliveries acknowledged, its messages sent) and the batch decided since then
            starts committing, as at the end of the loop, instead of waiting for `step`."""
            nonlocal pending, work, taken
            task = asyncio.ensure_future(step)
            try:
                while not task.done() and pending is not None:
                    if not pending.task.done():
                        either = [task, pending.task]
                        await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
                        continue
                    await self._complete(pending)
                    pending = None
                    if work is not None:
                        pending = self._begin(work, taken)
                        work, taken = None, []
            except BaseException:
                task.cancel()
                raise
            return await task

        self.running = True
        try:
            while not stop.is_set() or reading:
                room = _READ_AHEAD * size - sum(len(r.deliveries) for r in reading)
                head_ready = bool(reading) and reading[0].prepared.done()
                committing = pending is not None and not pending.task.done()
                if stop.is_set() or room <= 0:
                    if pending is not None and committing and not head_ready:
                        waits: list[asyncio.Future[Any]] = [pending.task, reading[0].prepared]
                        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
                elif pending is None and work is None and not reading:
                    wait = 0.0 if self._file_items or self._ahead else self._idle_wait()
                    self._start_reading(await self.transport.receive_batch(size, wait))
                elif committing and not head_ready and len(taken) < size:
                    self._start_reading(await self.transport.receive_batch(room, 0.001))
                deliveries: list[Delivery] = []
                prepared: list[Inbound] = []
                took = False
                asked: asyncio.Task[list[Change]] | None = None
                arrived: float | None = None
                if reading and (pending is None or reading[0].prepared.done()):
                    head = reading.popleft()
                    deliveries, prepared, took = head.deliveries, await head.prepared, True
                    asked, arrived = head.directory, head.started
                    self.stats.stage_read.observe(time.perf_counter() - head.started)
                    room += len(deliveries)
                    if not stop.is_set() and room > 0:
                        # What arrived meanwhile is read while this batch is decided.
                        more = await self.transport.receive_batch(min(size, room), 0)
                        self._start_reading(more)
                if (
                    (self._file_items or self._ahead)
                    and (took or not reading)
                    and len(taken) + len(deliveries) < size
                ):
                    started = time.perf_counter()
                    from_files = await meanwhile(
                        self._file_batch(size - len(taken) - len(deliveries))
                    )
                    deliveries = deliveries + from_files[0]
                    prepared = prepared + from_files[1]
                    self.stats.stage_read.observe(time.perf_counter() - started)
                    if any(p.uses_directory for p in from_files[1]):
                        asked = arrived = None  # queued before the batch came: ask afresh
                await meanwhile(self._follow_directory(prepared, asked, arrived))
                now = self.clock()
                if (
                    deliveries
                    or self._to_notify
                    or self._commands
                    or (self.deadlines and self.deadlines[0][0] <= now)
                ):
                    await meanwhile(self._recall(deliveries, prepared))
                    digests = [p.digest for p in prepared]
                    if pending is not None and self._any_known(deliveries, digests):
                        # A resend of something perhaps not yet committed: settle it first.
                        await self._complete(pending)
                        pending = None
                    resends = await meanwhile(self._lookup_resends(deliveries, digests))
                    work = work or _Work()
                    started = time.perf_counter()
                    await self._decide(work, deliveries, prepared, resends, now)
                    self.stats.stage_decide.observe(time.perf_counter() - started)
                    taken.extend(deliveries)
                if pending is not None and (pending.task.done() or len(taken) >= size):
                    await self._complete(pending)
                    pending = None
                if pending is None and work is not None:
                    pending = self._begin(work, taken)
                    work, taken = None, []
                    await asyncio.sleep(0)  # the commit starts while the next batch gathers
                elif pending is None and self._unmarked:
                    await self.store.mark_sent(self._unmarked, self.clock())
                    self._unmarked = []
        finally:
            self.running = False
            self._put_back_ahead()
            for r in reading:
                r.prepared.cancel()  # never acknowledged: the broker delivers them again
                if r.directory is not None:
                    r.directory.cancel()
            reading.clear()
            if self._directory_poll is not None:
                self._directory_poll[0].cancel()
                self._directory_poll = None
            self._refuse_commands("the clearing engine stopped")
            if pending is not None:
                await self._complete(pending)
            if work is not None:
                await self._complete(self._begin(work, taken))
            if self._unmarked:
                await self.store.mark_sent(self._unmarked, self.clock())
                self._unmarked = []
            if self._readers is not None:
                self._readers.shutdown(wait=False, cancel_futures=True)
                self._readers = None

    def _start_reading(self, deliveries: list[Delivery]) -> None:
        """Queue `deliveries` for reading: in a reader process when large, else at once.

        A small batch goes to the reader processes too when a batch before it is still
        being read there: it could not be decided before that one anyway.
        """
        if not deliveries:
            return
        started = time.perf_counter()
        directory = None
        future: asyncio.Future[list[Inbound]]
        behind = any(not r.prepared.done() for r in self._reading)
        large = len(deliveries) >= _READ_OFF_LOOP
        if self._readers is None or (not large and not behind):
            future = asyncio.get_running_loop().create_future()
            future.set_result(self._read_here(deliveries))
        else:
            items, verified = _to_read(deliveries)
            future = asyncio.get_running_loop().run_in_executor(
                self._readers, read_in_reader, items, self.limits, verified
            )
            # A batch read here that may need the directory has its query run while it
            # is read or waits to be (one read at once, in the loop, asks when it is
            # decided: there is nothing to overlap the query with).
            if any(_may_use_directory(d.data) for d in deliveries):
                directory = asyncio.ensure_future(self.directory.changes_since())
                directory.add_done_callback(_retrieved)
        self._reading.append(_Reading(deliveries, future, started, directory))

    async def _follow_directory(
        self,
        prepared: Sequence[Inbound],
        asked: asyncio.Task[list[Change]] | None = None,
        arrived: float | None = None,
    ) -> None:
        """Catch up with the directory when a message needs it, or now and then.

        A payment to an alias and a lookup are decided on the directory as committed
        when their batch arrived or later (no stale cache). `arrived` is when the batch
        arrived (perf_counter; None: unknown), and when the directory was last read from
        a query started since, nothing more is needed; else `asked`, the query started
        when the batch arrived (`_start_reading`, while it was read), or a query made
        now. Between those, a look every `_DIRECTORY_POLL` seconds completes claims that
        ran out and picks up claim steps to tell the banks about; nothing waits for that
        look (`_poll_directory`).
        """
        self._poll_directory()
        if not any(p.uses_directory for p in prepared):
            return
        if arrived is not None and self._directory_asof >= arrived:
            return
        if asked is not None and arrived is not None:
            changes = await asked
            self._directory_asof = max(self._directory_asof, arrived)
            self._queue_notices(self.directory.catch_up(changes))
            return
        asof = time.perf_counter()
        self._queue_notices(await self.directory.refresh())
        self._directory_asof = max(self._directory_asof, asof)

    def _poll_directory(self) -> None:
        """The look at the directory every `_DIRECTORY_POLL` seconds, in the background.

        The look reads the changes stored since the last one or, when a claim's period
        ran out, completes those claims (a write, which reads them too). It runs while
        the loop goes on; what it read is applied at the loop's first turn after it
        returns (a failed look raises there, as when the loop waited for it).
        """
        poll = self._directory_poll
        if poll is not None:
            task, asof = poll
            if task.done():
                self._directory_poll = None
                self._queue_notices(self.directory.catch_up(task.result()))
                self._directory_asof = max(self._directory_asof, asof)
            return
        mono = time.monotonic()
        if mono >= self._next_directory_poll:
            self._next_directory_poll = mono + _DIRECTORY_POLL
            due = self.directory.directory.due_claims(self.clock())
            look = self.directory.expire_due() if due else self.directory.changes_since()
            task = asyncio.ensure_future(look)
            task.add_done_callback(_retrieved)
            self._directory_poll = (task, time.perf_counter())

    def _queue_notices(self, changes: Sequence[Change]) -> None:
        for change in changes:
            if change.claim is not None:
                self._to_notify.append(change)
            self._notify_upto = max(self._notify_upto, change.seq)

    def _notify(self, now: datetime, work: _Work) -> None:
        """admi.004 to the claimant and the owner about each step of a portability claim."""
        for change in self._to_notify:
            claim = change.claim
            assert claim is not None
            code = CLAIM_EVENTS[change.action]
            text = (
                f"portability claim {claim.id} on {claim.kind} alias {claim.value}: "
                f"{claim.state} ({change.action} by {change.actor}); claimant {claim.claimant}, "
                f"owner {claim.owner}; the alias is with {change.alias.participant}"
            )
            params = (claim.id, str(claim.kind), claim.claimant, claim.owner)
            for to in dict.fromkeys((claim.claimant, claim.owner)):
                if to in self.ctx.directory:
                    doc = build.system_event(code=code, time=now, params=params, description=text)
                    self._emit(to, MessageType.ADMI_004, doc, now, work)
        self._to_notify = []
        work.batch.directory_notified = self._notify_upto

    def _idle_wait(self) -> float:
        wait = 0.05
        if self.deadlines:
            due = (self.deadlines[0][0] - self.clock()).total_seconds()
            wait = max(0.0, min(wait, due))
        return wait

    def _read_here(self, deliveries: Sequence[Delivery]) -> list[Inbound]:
        """Read `deliveries` on the event loop."""
        items, verified = _to_read(deliveries)
        return read_batch(items, self.limits, self.registry, self.security, verified=verified)

    async def _decide(
        self,
        work: _Work,
        deliveries: Sequence[Delivery],
        prepared: Sequence[Inbound],
        resends: dict[tuple[str, str], list[ArchivedMessage]],
        now: datetime,
    ) -> None:
        """Decide due deadlines and `deliveries`, into memory and into `work` for the store.

        Deadlines due by `now` (when the batch was received) expire first, so an answer
        that arrived after its payment's deadline is late even when both fall in one batch.
        Deciding yields to the event loop every few messages so that the previous batch's
        commit, a conversation of several round trips, advances meanwhile.
        """
        if self._commands:
            self._operate(now, work)
        self._expire(now, work)
        if self._to_notify:
            self._notify(now, work)
        for i, (d, ready) in enumerate(zip(deliveries, prepared, strict=True)):
            self._handle(d, ready, now, work, resends)
            if i % _YIELD_EVERY == _YIELD_EVERY - 1:
                await asyncio.sleep(0)

    def _begin(self, work: _Work, deliveries: Sequence[Delivery]) -> _Pending:
        """Start committing `work` (with the sent marks of the batches before it)."""
        batch = work.batch
        batch.deltas = net_deltas(batch.journal)
        batch.sent, batch.sent_at = self._unmarked, self.clock()
        self._unmarked = []
        task = asyncio.create_task(self._sign_and_commit(work))
        return _Pending(task=task, work=work, deliveries=deliveries)

    async def _sign_and_commit(self, work: _Work) -> None:
        """Sign the batch's outbound messages (with message security), then commit it."""
        started = time.perf_counter()
        if self.security is not None and work.unsigned:
            await self._sign(work)
        await self.store.commit_batch(work.batch)
        self.stats.stage_commit.observe(time.perf_counter() - started)

    async def _sign(self, work: _Work) -> None:
        """Replace each outbound message of `work` by its signed bytes (archived as sent)."""
        assert self.security is not None
        messages = work.batch.messages
        order = list(work.unsigned.values())
        raws = [messages[i].raw for i in order]
        if self._readers is not None:
            loop = asyncio.get_running_loop()
            signed = await loop.run_in_executor(self._readers, sign_in_reader, raws)
        else:
            signed = sign_batch(raws, self.security)
        by_id: dict[str, ArchivedMessage] = {}
        for i, raw in zip(order, signed, strict=True):
            m = replace(messages[i], raw=raw, sha256=hashlib.sha256(raw).hexdigest())
            messages[i] = by_id[m.id] = m
        for i, original in work.copies:
            src = by_id[original]
            messages[i] = by_id[messages[i].id] = replace(
                messages[i], raw=src.raw, sha256=src.sha256
            )
        work.sends = [_Send(s.participant, by_id.get(s.message.id, s.message)) for s in work.sends]

    async def _complete(self, pending: _Pending) -> None:
        """Wait for a batch's commit; then acknowledge its deliveries and send its messages."""
        try:
            await pending.task
        except BaseException:
            for future, _ in pending.work.operated:
                if not future.done():
                    future.set_exception(
                        Refused(503, "engine_stopped", "the batch failed to commit")
                    )
            raise
        for future, decision in pending.work.operated:
            if not future.done():
                future.set_result(decision)
        self._finals.extend(pending.work.finalized)
        stats = self.stats
        stats.batches += 1
        stats.messages_in += len(pending.deliveries)
        stats.batch_size.observe(len(pending.deliveries))
        started = time.perf_counter()
        await self.transport.ack([d for d in pending.deliveries if d.batch is None])
        sends = pending.work.sends
        await self.transport.send_many([(s.participant, s.message.raw) for s in sends])
        stats.stage_send.observe(time.perf_counter() - started)
        stats.messages_out += len(sends)
        self._unmarked.extend(s.message.id for s in sends)

    async def _send(self, sends: list[_Send]) -> None:
        """Send committed messages now and record them as sent (start-up path)."""
        if not sends:
            return
        await self.transport.send_many([(s.participant, s.message.raw) for s in sends])
        self.stats.messages_out += len(sends)
        for s in sends:
            self.stats.messages_out_by_type[s.message.msg_type[:8]] += 1
        await self.store.mark_sent([s.message.id for s in sends], self.clock())

    # --- memory beyond the recent: evicting and recalling --------------------------------

    def _evict(self) -> None:
        """Forget the oldest final payments, message ids and inbound hashes beyond the bounds.

        Only what is committed goes: final payments enter `_finals` once their batch is
        committed, and the keys of the deliveries still deciding or committing (fewer
        than four batches' worth: under two in the batch committing, under two in the one
        gathering) are the newest of their queues, never reached while the bound is at
        least four batches (`Settings`). Called only just before a batch's `_recall`, so
        that nothing the recall found present goes before the batch is decided.
        """
        keep = self.settings.engine.recent_payments
        finals, payments, by_uetr = self._finals, self.payments, self.by_uetr
        evicted = False
        while len(finals) > keep:
            p = payments.pop(finals.popleft(), None)
            if p is None:
                continue
            if by_uetr.get(p.uetr) is p:
                del by_uetr[p.uetr]
            self.e2e_keys.discard((p.debtor_agent, p.end_to_end_id, p.tx_id or ""))
            evicted = True
        msg_order, msg_ids = self._msg_id_order, self.msg_ids
        while len(msg_order) > keep:
            msg_ids.discard(msg_order.popleft())
            evicted = True
        hash_order, hashes = self._hash_order, self.hashes
        while len(hash_order) > 2 * keep:
            hashes.pop(hash_order.popleft(), None)
            evicted = True
        if evicted:
            self._cold = True

    async def _recall(self, deliveries: Sequence[Delivery], prepared: Sequence[Inbound]) -> None:
        """Bring into memory what the store holds of the keys these deliveries use.

        Before a batch is decided: the message ids, UETRs and transactions of its
        pacs.008s, the UETRs its pacs.002s and pacs.028s name, and the hashes of its
        messages, where memory does not have them and the store may (`_cold`). Memory
        has everything decided and not yet committed, so what the store lacks is new.
        """
        self._evict()
        if not self._cold or not deliveries:
            return
        keys = self._unknown(deliveries, prepared)
        if not keys:
            return
        found = await self.store.recall(keys)
        for p in found.payments:
            if p.id in self.payments:
                continue
            self._index(p)
            if p.state in FINAL_STATES:
                self._finals.append(p.id)
        for key in found.msg_ids - self.msg_ids:
            self.msg_ids.add(key)
            self._msg_id_order.append(key)
        for key, first in found.inbound_hashes.items():
            if key not in self.hashes:
                self.hashes[key] = first
                self._hash_order.append(key)

    def _unknown(self, deliveries: Sequence[Delivery], prepared: Sequence[Inbound]) -> RecallKeys:
        """The keys `deliveries` use (their views in `prepared`) that memory lacks."""
        hashes, msg_ids, by_uetr, e2e_keys = self.hashes, self.msg_ids, self.by_uetr, self.e2e_keys
        want_hashes: list[tuple[str, str]] = []
        want_msg_ids: list[tuple[str, str]] = []
        want_uetrs: list[str] = []
        want_txs: list[tuple[str, str, str]] = []
        for d, ready in zip(deliveries, prepared, strict=True):
            own = d.batch is None
            if own and (d.sender, ready.digest) not in hashes:
                want_hashes.append((d.sender, ready.digest))
            body = ready.body
            if isinstance(body, views.CreditTransfer):
                # A file's transactions share its MsgId: not a duplicate among them, yet
                # recorded once, so asked about as well.
                if (d.sender, body.msg_id) not in msg_ids:
                    want_msg_ids.append((d.sender, body.msg_id))
                tx = body.transactions[0]
                uetr = (tx.uetr or "").lower()
                if uetr and uetr not in by_uetr:
                    want_uetrs.append(uetr)
                key = (d.sender, tx.end_to_end_id, tx.tx_id or "")
                if key not in e2e_keys:
                    want_txs.append(key)
            elif isinstance(body, views.StatusReport | views.StatusRequest):
                for t in body.transactions:
                    uetr = (t.original_uetr or "").lower()
                    if uetr and uetr not in by_uetr:
                        want_uetrs.append(uetr)
        return RecallKeys(
            msg_ids=want_msg_ids, uetrs=want_uetrs, transactions=want_txs, hashes=want_hashes
        )

    def _any_known(self, deliveries: Sequence[Delivery], digests: Sequence[str]) -> bool:
        hashes = self.hashes
        return any((d.sender, h) in hashes for d, h in zip(deliveries, digests, strict=True))

    async def _lookup_resends(
        self, deliveries: Sequence[Delivery], digests: Sequence[str]
    ) -> dict[tuple[str, str], list[ArchivedMessage]]:
        """Earlier answers to byte-identical messages already committed (rare path)."""
        found: dict[tuple[str, str], list[ArchivedMessage]] = {}
        for d, digest in zip(deliveries, digests, strict=True):
            key = (d.sender, digest)
            prev = self.hashes.get(key)
            if prev is not None and key not in found:
                found[key] = await self.store.responses_to(prev, d.sender)
        return found

    # --- one delivery -------------------------------------------------------------------

    def _handle(
        self,
        d: Delivery,
        ready: Inbound,
        now: datetime,
        work: _Work,
        resends: dict[tuple[str, str], list[ArchivedMessage]],
    ) -> None:
        sha = ready.digest
        hdr = ready.header
        inbound = ArchivedMessage(
            id=self._ids(),
            direction=Direction.IN,
            participant=d.sender,
            msg_type=ready.mtype.value if ready.mtype is not None else "unknown",
            biz_msg_id=hdr.biz_msg_idr if hdr is not None else None,
            sha256=sha,
            raw=d.data,
            at=now,
            batch_file=None if d.batch is None else d.batch[0],
        )
        self.stats.messages_in_by_type[inbound.msg_type[:8]] += 1  # pacs.008, unknown
        if d.batch is not None:
            work.batch.messages.append(inbound)
            self._batch_item(d.sender, d.batch, ready, inbound, now, work)
            return
        key = (d.sender, sha)
        prev = self.hashes.get(key)
        if prev is not None:
            work.batch.messages.append(inbound)
            self._resend(d.sender, prev, inbound, resends.get(key), now, work)
            return
        self.hashes[key] = inbound.id
        self._hash_order.append(key)
        if ready.mtype is None:
            work.batch.messages.append(inbound)
            text = ready.unusable or "unusable message"
            self._reject_message(d.sender, inbound, "unusable", text, now, work)
            return
        work.batch.messages.append(inbound)
        if d.sender not in self.ctx.directory:
            log.warning("message from unknown participant %s archived and ignored", d.sender)
            return
        if not ready.complete:
            text = "a business message is one AppHdr and one Document in a BizMsg envelope"
            self._reject_message(d.sender, inbound, "envelope", text, now, work)
            return
        if ready.signature is not None:
            code, text = ready.signature
            self.stats.signature_failures[code] += 1
            if ready.mtype is MessageType.PACS_008 and ready.refs is not None:
                self._reject_transfer(d.sender, ready.refs, code, text, inbound, now, work)
            else:
                self._reject_message(d.sender, inbound, code, text, now, work, location="Sgntr")
            return
        self._dispatch(d.sender, ready, inbound, now, work)

    def _dispatch(
        self, sender: str, msg: Inbound, inbound: ArchivedMessage, now: datetime, work: _Work
    ) -> None:
        """Hand a usable message to the step of the flow its type names."""
        mtype, hdr, issues, body = msg.mtype, msg.header, msg.issues, msg.body
        if mtype is MessageType.PACS_008:
            self._credit_transfer(sender, msg, inbound, now, work)
        elif issues or hdr is None:
            first = issues[0] if issues else None
            self._reject_message(
                sender,
                inbound,
                "FF01",
                first.message if first else "AppHdr cannot be read",
                now,
                work,
                location=first.path if first else "AppHdr",
            )
        elif hdr.from_bicfi is None or self._bicfi(hdr.from_bicfi) != sender:
            text = f"AppHdr Fr {hdr.sender or '(none)'} is not the sender {sender}"
            self._reject_message(sender, inbound, "RC01", text, now, work, location="AppHdr/Fr")
        elif msg.view_error is not None:
            # Schema-valid yet not readable for clearing; nothing has moved.
            self._reject_message(sender, inbound, "FF01", msg.view_error, now, work)
        elif isinstance(body, views.StatusReport):
            self._status_report(sender, body, inbound, now, work)
        elif isinstance(body, views.StatusRequest):
            self._status_request(sender, body, inbound, now, work)
        elif isinstance(body, views.MessageReject):
            log.warning("%s rejected message %s: %s", sender, body.reference, body.reason)
        elif isinstance(body, views.SystemEvent):
            self._system_event(sender, body, inbound, now, work)
        elif isinstance(body, views.IdentificationVerificationRequest):
            self._lookup(sender, body, inbound, now, work)
        else:
            assert mtype is not None
            text = f"{mtype.value} from a participant is not supported by the switch"
            self._reject_message(sender, inbound, "unsupported", text, now, work)

    def _bicfi(self, bicfi: str) -> str | None:
        p = self.ctx.directory.by_bicfi(bicfi)
        return p.id if p is not None else None

    def _resend(
        self,
        sender: str,
        prev: str,
        inbound: ArchivedMessage,
        committed: list[ArchivedMessage] | None,
        now: datetime,
        work: _Work,
    ) -> None:
        """A byte-identical resend gets the same answers again (none yet: the answer follows)."""
        answers = list(committed or ())
        answers += [m for m in work.by_inbound.get(prev, ()) if m.participant == sender]
        for old in answers:
            self.stats.messages_out_by_type[old.msg_type[:8]] += 1
            copy = replace(old, id=self._ids(), at=now, in_reply_to=inbound.id, sent_at=None)
            if old.id in work.unsigned:
                work.copies.append((len(work.batch.messages), old.id))
            work.batch.messages.append(copy)
            work.sends.append(_Send(sender, copy))

    # --- outbound -----------------------------------------------------------------------

    def _emit(
        self,
        to: str,
        mtype: MessageType,
        document: bytes,
        now: datetime,
        work: _Work,
        *,
        in_reply_to: str | None = None,
        payment_id: str | None = None,
    ) -> None:
        biz = self._ids()
        hdr = build.header(
            sender=self.switch_by_bicfi,
            receiver=Agent(bicfi=to),
            biz_msg_idr=biz,
            mtype=mtype,
            created=now,
        )
        raw = build.business_message(hdr, document)
        msg = ArchivedMessage(
            id=biz,
            direction=Direction.OUT,
            participant=to,
            msg_type=mtype.value,
            biz_msg_id=biz,
            sha256=hashlib.sha256(raw).hexdigest(),
            raw=raw,
            at=now,
            payment_id=payment_id,
            in_reply_to=in_reply_to,
        )
        work.unsigned[biz] = len(work.batch.messages)
        work.batch.messages.append(msg)
        work.sends.append(_Send(to, msg))
        self.stats.messages_out_by_type[mtype.family] += 1
        if in_reply_to is not None:
            work.by_inbound.setdefault(in_reply_to, []).append(msg)

    def _reject_message(
        self,
        to: str,
        inbound: ArchivedMessage,
        reason: str,
        text: str,
        now: datetime,
        work: _Work,
        *,
        location: str | None = None,
    ) -> None:
        """admi.002: the message could not be used (no pacs.002 possible)."""
        doc = build.message_reject(
            reference=inbound.biz_msg_id or inbound.id,
            reason=reason,
            rejected_at=now,
            description=text,
            error_location=location,
        )
        self._emit(to, MessageType.ADMI_002, doc, now, work, in_reply_to=inbound.id)

    def _in_kind(self, participant: str, named_by: str) -> Agent:
        if named_by == USABA:
            p = self.ctx.directory.get(participant)
            if p is not None:
                return Agent(member_id=p.member_id, clearing_system=USABA)
        return Agent(bicfi=participant)

    def _switch_in_kind(self, named_by: str) -> Agent:
        return self.switch_by_member if named_by == USABA else self.switch_by_bicfi

    def _status_to(
        self,
        to: str,
        p: PaymentRecord,
        status: str,
        reason: str | None,
        now: datetime,
        work: _Work,
        *,
        in_reply_to: str | None = None,
        text: str | None = None,
        asked: bool = False,
    ) -> None:
        """A pacs.002 about payment `p` to its debtor or creditor agent, agents named in kind.

        The debtor agent of a payment from a batch file gets its outcome in the file's
        status file instead, unless it `asked` (a pacs.028 on its queue).
        """
        if p.batch_file is not None and to == p.debtor_agent and not asked:
            return
        named_by = p.debtor_named_by if to == p.debtor_agent else p.creditor_named_by
        doc = build.status_report(
            msg_id=self._ids(),
            created=now,
            status=status,
            original_msg_id=p.msg_id,
            original_instr_id=p.instr_id,
            original_end_to_end_id=p.end_to_end_id,
            original_tx_id=p.tx_id,
            original_uetr=p.uetr,
            reason=reason,
            additional_info=text,
            accepted_at=now if status in ("ACSC", "ACCC") else None,
            clearing_ref=p.id,
            instructing_agent=self._switch_in_kind(named_by),
            instructed_agent=self._in_kind(to, named_by),
        )
        self._emit(
            to, MessageType.PACS_002, doc, now, work, in_reply_to=in_reply_to, payment_id=p.id
        )

    # --- pacs.008 -----------------------------------------------------------------------

    def _credit_transfer(
        self,
        sender: str,
        msg: Inbound,
        inbound: ArchivedMessage,
        now: datetime,
        work: _Work,
        *,
        batch: tuple[str, int] | None = None,
    ) -> _Outcome:
        """Clear one pacs.008: the payment it became, or the reason it was refused first.

        A transaction of a batch file (`batch`) goes through the same rules; its debtor
        agent hears the outcome in the status file, not on its queue, and the file's
        MsgId, checked once for the whole file, is shared by all its transactions.
        """
        hdr, issues, ct = msg.header, msg.issues, msg.body
        if msg.view_error is not None:
            # Schema-valid yet not clearable (say, an agent named by neither BICFI nor
            # member id): rejected like a schema violation, before anything moves.
            issues = [SchemaIssue(part="Document", line=0, path="Document", message=msg.view_error)]
        if issues or hdr is None or not isinstance(ct, views.CreditTransfer):
            assert msg.refs is not None and issues
            code, why = _invalid_transfer(issues)
            if batch is None:
                self._reject_transfer(sender, msg.refs, code, why, inbound, now, work)
            return None, code, why
        tx = ct.transactions[0]
        uetr = (tx.uetr or "").lower()
        tx_key = (sender, tx.end_to_end_id, tx.tx_id or "")
        named_by = USABA if tx.debtor_agent.bicfi is None else BICFI
        dup = None
        if batch is None and (sender, ct.msg_id) in self.msg_ids:
            dup = f"message id {ct.msg_id} was already used by {sender}"
        elif uetr in self.by_uetr:
            dup = f"UETR {uetr} was already cleared"
        elif tx_key in self.e2e_keys:
            dup = f"EndToEndId {tx.end_to_end_id} / TxId {tx.tx_id} was already used by {sender}"
        if dup is not None:
            self.stats.duplicates += 1
            if batch is not None:
                return None, "DUPL", dup
            doc = build.status_report(
                msg_id=self._ids(),
                created=now,
                status="RJCT",
                original_msg_id=ct.msg_id,
                original_instr_id=tx.instr_id,
                original_end_to_end_id=tx.end_to_end_id,
                original_tx_id=tx.tx_id,
                original_uetr=tx.uetr,
                reason="DUPL",
                additional_info=dup,
                instructing_agent=self._switch_in_kind(named_by),
                instructed_agent=self._in_kind(sender, named_by),
            )
            self._emit(sender, MessageType.PACS_002, doc, now, work, in_reply_to=inbound.id)
            return None, "DUPL", dup
        if (sender, ct.msg_id) not in self.msg_ids:
            self.msg_ids.add((sender, ct.msg_id))
            self._msg_id_order.append((sender, ct.msg_id))
            work.batch.msg_ids.append((sender, ct.msg_id))
        ctx = self.ctx
        cdtr = AgentRef(bicfi=tx.creditor_agent.bicfi, member_id=tx.creditor_agent.member_id)
        alias: Alias | None = None
        alias_issue: tuple[str, str] | None = None
        if msg.forward_marks is not None:
            alias, alias_issue = self._resolve_alias(tx, cdtr)
            if alias is not None:
                # Every rule about the creditor agent applies to the alias's owner.
                cdtr = AgentRef(bicfi=alias.participant)
        facts = PaymentFacts(
            sender=sender,
            header_from=hdr.from_bicfi,
            instructing_agent=_ref(tx.instructing_agent or ct.instructing_agent),
            debtor_agent=AgentRef(bicfi=tx.debtor_agent.bicfi, member_id=tx.debtor_agent.member_id),
            creditor_agent=cdtr,
            amount=tx.amount.value,
            currency=tx.amount.currency,
            transactions_in_message=len(ct.transactions),
        )
        violations = check_payment(facts, ctx)
        creditor = ctx.resolve(cdtr)
        try:
            amount = to_minor(tx.amount.value, ctx.rules.exponent)
        except ValueError:
            amount = 0
        p = PaymentRecord(
            id=self._pids(),
            uetr=uetr,
            msg_id=ct.msg_id,
            instr_id=tx.instr_id,
            end_to_end_id=tx.end_to_end_id,
            tx_id=tx.tx_id,
            debtor_agent=sender,
            creditor_agent=creditor.id if creditor is not None else None,
            amount=max(amount, 0),
            state=PaymentState.RECEIVED,
            reason=None,
            created_at=now,
            updated_at=now,
            deadline=None,
            inbound_id=inbound.id,
            debtor_named_by=named_by,
            creditor_named_by=USABA if tx.creditor_agent.bicfi is None else BICFI,
            batch_file=None if batch is None else batch[0],
        )
        self._index(p)
        work.batch.new_payments.append(p)
        self.stats.payments += 1
        reason: str | None = None
        text: str | None = None
        if violations:
            reason, text = violations[0].reason, violations[0].text
        elif alias_issue is not None:
            reason, text = alias_issue
        elif creditor is None:
            reason, text = "BE23", "the creditor agent is the switch but no alias is named"
        if reason is None:
            try:
                work.batch.journal += self.book.reserve(sender, p.amount, p.id)
            except InsufficientPosition:
                reason = "AM04"
                text = f"available position of {sender} is below {tx.amount}"
        if reason is not None:
            self._finish(p, PaymentEvent.REJECT, reason, now, work)
            self._status_to(sender, p, "RJCT", reason, now, work, in_reply_to=inbound.id, text=text)
            return p, reason, text
        p.state = next_state(next_state(p.state, PaymentEvent.RESERVE), PaymentEvent.FORWARD)
        self.stats.in_flight += 1
        p.deadline = now + self.timeout
        heapq.heappush(self.deadlines, (p.deadline, p.id))
        assert creditor is not None
        forward = msg.forward
        if alias is not None:
            agent_id = creditor.id if p.creditor_named_by == BICFI else creditor.member_id
            forward = resolved(msg, agent_id, alias.account)
        assert forward is not None
        self._emit(creditor.id, MessageType.PACS_008, forward, now, work, payment_id=p.id)
        return p, None, None

    def _batch_item(
        self,
        sender: str,
        batch: tuple[str, int],
        msg: Inbound,
        inbound: ArchivedMessage,
        now: datetime,
        work: _Work,
    ) -> None:
        """Decide one transaction of a batch file and record its outcome for the status file."""
        payment: PaymentRecord | None = None
        reason: str | None
        text: str | None
        refs: tuple[str | None, str | None, str | None, str | None]
        if msg.mtype is not MessageType.PACS_008 or not msg.complete:
            reason, text = "FF01", msg.unusable or "the transaction is not a usable pacs.008"
        elif sender not in self.ctx.directory:
            reason, text = "RC01", f"{sender} is not a participant of the scheme"
        else:
            payment, reason, text = self._credit_transfer(
                sender, msg, inbound, now, work, batch=batch
            )
        if payment is not None:
            refs = (payment.instr_id, payment.end_to_end_id, payment.tx_id, payment.uetr)
        elif isinstance(msg.body, views.CreditTransfer) and msg.body.transactions:
            tx = msg.body.transactions[0]
            refs = (tx.instr_id, tx.end_to_end_id, tx.tx_id, _uetr_or_none(tx.uetr))
        elif msg.refs is not None:
            refs = (None, msg.refs.end_to_end_id, msg.refs.tx_id, _uetr_or_none(msg.refs.uetr))
        else:
            refs = (None, None, None, None)
        work.batch.batch_items.append(
            BatchItem(
                file_id=batch[0],
                index=batch[1],
                inbound_id=inbound.id,
                payment_id=None if payment is None else payment.id,
                instr_id=refs[0],
                end_to_end_id=refs[1],
                tx_id=refs[2],
                uetr=refs[3],
                status="RJCT" if payment is None else None,
                reason=reason if payment is None or reason is not None else None,
                info=None if text is None else text[:500],
            )
        )

    def _resolve_alias(
        self, tx: views.CreditTransferTx, named: AgentRef
    ) -> tuple[Alias | None, tuple[str, str] | None]:
        """The active alias a pacs.008 pays, or the reason it cannot be paid (RULEBOOK §5).

        The creditor agent the debtor agent named must be the switch (it did not look the
        alias up) or the alias's owner (the one a lookup returned).
        """
        account = tx.creditor_account
        assert account is not None and account.proxy is not None
        proxy = account.proxy
        alias = None
        try:
            kind = AliasType(proxy.type)
            alias = self.directory.directory.resolve(kind, proxy.id)
        except (ValueError, DirectoryError):
            pass
        if alias is None or alias.participant not in self.ctx.directory:
            return None, ("BE23", f"alias {proxy.type} {proxy.id} is not registered, or not active")
        if not self.ctx.is_switch(named):
            agent = self.ctx.resolve(named)
            if agent is None or agent.id != alias.participant:
                text = (
                    f"creditor agent {named} is not the participant alias {proxy.type} "
                    f"{proxy.id} is registered with: look the alias up again"
                )
                return None, ("RC04", text)
        return alias, None

    def _reject_transfer(
        self,
        sender: str,
        refs: TransferRefs,
        reason: str,
        text: str,
        inbound: ArchivedMessage,
        now: datetime,
        work: _Work,
    ) -> None:
        """RJCT `reason` for a pacs.008 refused before it became a payment."""
        doc = build.status_report(
            msg_id=self._ids(),
            created=now,
            status="RJCT",
            original_msg_id=refs.msg_id,
            original_end_to_end_id=refs.end_to_end_id,
            original_tx_id=refs.tx_id,
            original_uetr=_uetr_or_none(refs.uetr),
            reason=reason,
            additional_info=text,
            instructing_agent=self.switch_by_bicfi,
            instructed_agent=Agent(bicfi=sender),
        )
        self._emit(sender, MessageType.PACS_002, doc, now, work, in_reply_to=inbound.id)

    def _finish(
        self, p: PaymentRecord, event: PaymentEvent, reason: str | None, now: datetime, work: _Work
    ) -> None:
        """Move `p` to a final state (through the transition table) and count it."""
        work.finalized.append(p.id)
        stats = self.stats
        if p.state is PaymentState.FORWARDED:
            stats.in_flight -= 1
        p.state = next_state(p.state, event)
        p.reason = reason
        p.updated_at = now
        p.deadline = None
        if p.state is PaymentState.SETTLED:
            stats.settled += 1
        elif p.state is PaymentState.TIMED_OUT:
            stats.timed_out += 1
        else:
            stats.rejected += 1
        stats.finals[(p.state.value, reason or "")] += 1
        seconds = max(0.0, (now - p.created_at).total_seconds())
        stats.end_to_end.observe(seconds)
        stats.recent_latencies.append(seconds)

    def _update(self, p: PaymentRecord, work: _Work) -> None:
        work.batch.updates.append(
            PaymentUpdate(
                id=p.id, state=p.state, reason=p.reason, updated_at=p.updated_at, deadline=None
            )
        )

    # --- pacs.002 from the creditor agent -----------------------------------------------

    def _status_report(
        self,
        sender: str,
        rpt: views.StatusReport,
        inbound: ArchivedMessage,
        now: datetime,
        work: _Work,
    ) -> None:
        if len(rpt.transactions) != 1:
            text = (
                f"a real-time pacs.002 carries one transaction status, not {len(rpt.transactions)}"
            )
            self._reject_message(sender, inbound, "FF01", text, now, work)
            return
        st = rpt.transactions[0]
        p = self.by_uetr.get((st.original_uetr or "").lower())
        if p is None:
            text = f"no payment with OrgnlUETR {st.original_uetr or '(missing)'}"
            self._reject_message(sender, inbound, "unknown", text, now, work)
            return
        if sender != p.creditor_agent:
            text = f"{sender} is not the creditor agent of payment {p.uetr}"
            self._reject_message(sender, inbound, "RC01", text, now, work)
            return
        if p.state is not PaymentState.FORWARDED:
            text = f"payment {p.uetr} is already {p.state}: this status changes nothing"
            self._reject_message(sender, inbound, "late", text, now, work)
            return
        # The status report belongs to the payment: link its archive row to it.
        assert work.batch.messages[-1] is inbound
        work.batch.messages[-1] = replace(inbound, payment_id=p.id)
        if st.status in ACCEPT_STATUSES:
            assert p.creditor_agent is not None
            work.batch.journal += self.book.settle(p.debtor_agent, p.creditor_agent, p.amount, p.id)
            self._finish(p, PaymentEvent.ACCEPT, None, now, work)
            self._update(p, work)
            self._status_to(p.debtor_agent, p, "ACSC", None, now, work)
            self._status_to(p.creditor_agent, p, "ACCC", None, now, work, in_reply_to=inbound.id)
        elif st.status == "RJCT":
            reason = st.reasons[0] if st.reasons else "NARR"
            info = st.additional_info[0] if st.additional_info else None
            work.batch.journal += self.book.release(p.debtor_agent, p.amount, p.id)
            self._finish(p, PaymentEvent.CREDITOR_REJECT, reason, now, work)
            self._update(p, work)
            self._status_to(p.debtor_agent, p, "RJCT", reason, now, work, text=info)
        else:
            text = f"status {st.status} is not an answer the scheme accepts (ACSP or RJCT)"
            self._reject_message(sender, inbound, "FF01", text, now, work)

    # --- pacs.028 -----------------------------------------------------------------------

    def _status_request(
        self,
        sender: str,
        req: views.StatusRequest,
        inbound: ArchivedMessage,
        now: datetime,
        work: _Work,
    ) -> None:
        if not req.transactions:
            self._reject_message(sender, inbound, "FF01", "TxInf is missing", now, work)
            return
        for tx in req.transactions:
            p = self.by_uetr.get((tx.original_uetr or "").lower())
            if p is None or sender not in (p.debtor_agent, p.creditor_agent):
                text = f"no payment with OrgnlUETR {tx.original_uetr or '(missing)'} for {sender}"
                self._reject_message(sender, inbound, "unknown", text, now, work)
                continue
            status = inquiry_status(p.state)
            if status == "ACSC" and sender == p.creditor_agent:
                status = "ACCC"
            self._status_to(
                sender, p, status, p.reason, now, work, in_reply_to=inbound.id, asked=True
            )

    # --- admi.004 ------------------------------------------------------------------------

    def _system_event(
        self,
        sender: str,
        event: views.SystemEvent,
        inbound: ArchivedMessage,
        now: datetime,
        work: _Work,
    ) -> None:
        """Sign-on (SGON) and sign-off (SGOF) of the sending participant (RULEBOOK §1)."""
        if event.code not in _SIGN_EVENTS:
            text = f"system event {event.code} from a participant is not supported (SGON, SGOF)"
            self._reject_message(sender, inbound, "unsupported", text, now, work)
            return
        named = [self._bicfi(p) or p for p in event.params]
        if any(n != sender for n in named):
            text = f"EvtParam {', '.join(event.params)} names another participant than {sender}"
            self._reject_message(sender, inbound, "RC01", text, now, work, location="EvtParam")
            return
        current = self.ctx.directory[sender]
        wanted = _SIGN_EVENTS[event.code]
        status = current.status
        if current.status is ParticipantStatus.SUSPENDED:
            text = f"{sender} is suspended by the scheme operator; only the operator resumes it"
        elif current.status is wanted:
            text = f"{sender} is already {wanted}"
        else:
            status = wanted
            self._set_participants(
                replace(p, status=wanted) if p.id == sender else p
                for p in self.ctx.directory.values()
            )
            work.batch.statuses.append((sender, wanted))
            text = (
                "signed on: payments to and from it are cleared"
                if wanted is (ParticipantStatus.ACTIVE)
                else "signed off: payments to it are rejected AB08, from it AG01"
            )
            log.info("%s %s", sender, text)
        doc = build.system_event(
            code=event.code, time=now, params=(sender,), description=f"{sender} is {status}: {text}"
        )
        self._emit(sender, MessageType.ADMI_004, doc, now, work, in_reply_to=inbound.id)

    # --- acmt.023 -------------------------------------------------------------------------

    def _lookup(
        self,
        sender: str,
        req: views.IdentificationVerificationRequest,
        inbound: ArchivedMessage,
        now: datetime,
        work: _Work,
    ) -> None:
        """acmt.024: who owns each alias asked about, and the owner's masked name (§5).

        Each verification is admitted by the token buckets of the asking participant and,
        when the request names one, of its end user; it costs a found price or a (much
        higher) miss price, so that walking the directory for valid aliases runs dry fast.
        A refused verification is answered AM14 (velocity limit) and looks nothing up.
        """
        if self._bicfi(req.assigner.bicfi or "") != sender and (
            req.assigner.member_id is None
            or (p := self.ctx.directory.by_member_id(req.assigner.member_id)) is None
            or p.id != sender
        ):
            text = f"the assigner {req.assigner.key} is not the sender {sender}"
            self._reject_message(sender, inbound, "RC01", text, now, work, location="Assgnr")
            return
        by_member = req.assigner.bicfi is None
        mono = time.monotonic()
        limiter, directory = self.lookups, self.directory.directory
        reports = []
        for v in req.verifications:
            self.stats.lookups += 1
            if not limiter.admit(sender, v.end_user, mono):
                self.stats.lookups_refused += 1
                _LOOKUPS_REFUSED.inc()
                reports.append(
                    views.VerificationReport(
                        original_id=v.id, verified=False, reason="AM14", proxy=v.proxy
                    )
                )
                continue
            alias = None
            with contextlib.suppress(ValueError):
                alias = directory.resolve(AliasType(v.proxy.type), v.proxy.id)
            limiter.charge(sender, v.end_user, alias is not None, mono)
            if alias is None:
                _LOOKUPS_NOT_FOUND.inc()
                reports.append(
                    views.VerificationReport(
                        original_id=v.id, verified=False, reason="BE23", proxy=v.proxy
                    )
                )
                continue
            self.stats.lookups_found += 1
            _LOOKUPS_FOUND.inc()
            reports.append(
                views.VerificationReport(
                    original_id=v.id,
                    verified=True,
                    proxy=v.proxy,
                    agent=self._in_kind(alias.participant, USABA if by_member else BICFI),
                    name=mask_name(alias.name),
                )
            )
        doc = build.identification_verification_report(
            msg_id=self._ids(),
            created=now,
            original_msg_id=req.msg_id,
            original_created=req.created,
            assigner=self._switch_in_kind(USABA if by_member else BICFI),
            assignee=self._in_kind(sender, USABA if by_member else BICFI),
            reports=reports,
        )
        self._emit(sender, MessageType.ACMT_024, doc, now, work, in_reply_to=inbound.id)

    # --- deadlines ----------------------------------------------------------------------

    def _expire(self, now: datetime, work: _Work) -> None:
        """RJCT AB05 to both agents of every forwarded payment whose deadline passed."""
        heap = self.deadlines
        while heap and heap[0][0] <= now:
            _, pid = heapq.heappop(heap)
            p = self.payments.get(pid)
            if p is None or p.state is not PaymentState.FORWARDED:
                continue
            work.batch.journal += self.book.release(p.debtor_agent, p.amount, p.id)
            self._finish(p, PaymentEvent.TIMEOUT, "AB05", now, work)
            self._update(p, work)
            text = "the creditor agent did not answer in time"
            self._status_to(p.debtor_agent, p, "RJCT", "AB05", now, work, text=text)
            if p.creditor_agent is not None:
                self._status_to(p.creditor_agent, p, "RJCT", "AB05", now, work, text=text)


def _to_read(deliveries: Sequence[Delivery]) -> tuple[list[tuple[str, bytes]], frozenset[int]]:
    """The (sender, bytes) items of `deliveries` and the positions of those already verified.

    A batch file is verified and validated whole (signature, scheme schemas); its
    transactions are not verified one by one, nor validated again.
    """
    items = [(d.sender, d.data) for d in deliveries]
    return items, frozenset(i for i, d in enumerate(deliveries) if d.batch is not None)


def _ref(agent: Agent | None) -> AgentRef | None:
    if agent is None:
        return None
    return AgentRef(bicfi=agent.bicfi, member_id=agent.member_id)


def _invalid_transfer(issues: Sequence[SchemaIssue]) -> tuple[str, str]:
    """RJCT FF01 for a pacs.008 that breaks its schema (AM03 when only its currency does)."""
    reason = "FF01"
    if all(_is_currency_issue(i) for i in issues):
        reason = "AM03"
    first = issues[0]
    return reason, f"{first.path}: {first.message}"


def _is_currency_issue(issue: SchemaIssue) -> bool:
    return issue.path.endswith("IntrBkSttlmAmt") and "Ccy" in issue.message


_UUID4: Final = re.compile(r"[a-f0-9]{8}-[a-f0-9]{4}-4[a-f0-9]{3}-[89ab][a-f0-9]{3}-[a-f0-9]{12}")


def _uetr_or_none(text: str | None) -> str | None:
    """`text` if it is a UETR the pacs.002 schema accepts, else None."""
    return text if text and _UUID4.fullmatch(text) else None
