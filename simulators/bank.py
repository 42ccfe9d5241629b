"""A simulated participant bank: the counterpart the switch is tested and loaded against.

Theory: a `SimulatedBank` sits on one `ParticipantChannel` and plays both roles of the
credit transfer flow (RULEBOOK §3):

* as debtor agent, `pay` sends a pacs.008 (and `resend` the same bytes, `inquire` a
  pacs.028); the switch's final pacs.002 (`ACSC` or `RJCT`) is recorded per UETR and
  wakes whoever awaits it in `wait_final`;
* as creditor agent, `run` answers each forwarded pacs.008 with a pacs.002 chosen by the
  `Behaviour` configured for the creditor account: accept (`ACSP`), reject with a reason,
  answer too late, never answer, or answer twice. The switch's `ACCC` or `RJCT` that
  follows is recorded the same way.

Everything else the switch sends is kept for inspection: message rejects (admi.002) in
`rejects`, system events (admi.004) in `events`. Inbound messages are de-duplicated by
`BizMsgIdr`, as every receiver on the scheme does. With `fast` (the default, for load
generation) messages are rendered from string templates and inbound ones in the
switch's canonical shape are read without a tree (`fast_read`), anything else parsed and
read through the typed views; without it they are built with the lxml builders and
inbound ones validated against the scheme schemas and read through the typed views. `counters` says
what happened (see `SimulatedBank.counters`).
"""

from __future__ import annotations

import asyncio
import logging
import re
import secrets
import uuid
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from enum import StrEnum
from typing import Final, Generic, Literal, TypeVar

from lxml import etree

from participants.messages import (
    SWITCH_BICFI,
    SWITCH_MEMBER_ID,
    CreditTransferTemplate,
    StatusTemplate,
    business_date,
    credit_transfer,
    envelope,
    identification_verification_request,
    status_report,
    status_request,
)
from switch.core import normalize_bicfi
from switch.iso20022 import views
from switch.iso20022.parse import SchemaIssue, UnusableMessage, parse, validate
from switch.iso20022.registry import MessageType, SchemaRegistry
from switch.iso20022.views import USABA, Agent, Proxy
from switch.records import record
from switch.transport.base import ParticipantChannel

__all__ = [
    "DEFAULT_CREDITOR_ACCOUNT",
    "SWITCH_AGENT",
    "Action",
    "Behaviour",
    "FinalStatus",
    "InvalidMessage",
    "Role",
    "SentPayment",
    "SimulatedBank",
]

log = logging.getLogger(__name__)

K = TypeVar("K")
V = TypeVar("V")

SWITCH_AGENT: Final = Agent(bicfi=SWITCH_BICFI, member_id=SWITCH_MEMBER_ID, clearing_system=USABA)
"""The switch with both its identifiers, so a bank can name it in either kind."""

_BICFI: Final = re.compile(r"[A-Z0-9]{4}[A-Z]{2}[A-Z0-9]{2}(?:[A-Z0-9]{3})?")
_MEMBER_ID: Final = re.compile(r"[0-9]{9}")
_REASON: Final = re.compile(r"[A-Z0-9]{4}")
DEFAULT_CREDITOR_ACCOUNT: Final = "100000000001"
"""The creditor account of a payment whose caller names none (and no alias)."""
_LATE_MARGIN: Final = 1.0
"""How far past the response timeout a `late` answer is sent, in seconds."""

ACSP: Final = "ACSP"
RJCT: Final = "RJCT"
ACSC: Final = "ACSC"
ACCC: Final = "ACCC"


class Action(StrEnum):
    """What a bank does with a payment to one of its accounts."""

    ACCEPT = "accept"
    REJECT = "reject"
    LATE = "late"
    SILENT = "silent"
    TWICE = "twice"


@dataclass(frozen=True, slots=True, kw_only=True)
class Behaviour:
    """How the bank answers payments to an account: `accept`, `reject:AC04`, `late`, ..."""

    action: Action
    reason: str | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "action", Action(self.action))
        if self.action is Action.REJECT:
            if self.reason is None or not _REASON.fullmatch(self.reason):
                raise ValueError(
                    f"behaviour reject needs a 4-character reason code, not {self.reason!r}"
                )
        elif self.reason is not None:
            raise ValueError(f"behaviour {self.action} takes no reason code")

    @classmethod
    def parse(cls, text: str) -> Behaviour:
        """The behaviour written as `text` (case-insensitive); ValueError names a bad one."""
        kind, sep, code = text.strip().partition(":")
        try:
            action = Action(kind.strip().lower())
        except ValueError:
            known = ", ".join(a.value for a in Action)
            raise ValueError(f"unknown behaviour {text!r} (known: {known})") from None
        if action is Action.REJECT:
            code = code.strip().upper()
            if not _REASON.fullmatch(code):
                raise ValueError(
                    f"behaviour {text!r}: reject needs a 4-character reason code, e.g. reject:AC04"
                )
            return cls(action=action, reason=code)
        if sep:
            raise ValueError(f"behaviour {text!r}: {action} takes no reason code")
        return cls(action=action)

    def __str__(self) -> str:
        return self.action.value if self.reason is None else f"{self.action}:{self.reason}"


ACCEPT: Final = Behaviour(action=Action.ACCEPT)


class Role(StrEnum):
    """The bank's part in a payment."""

    DEBTOR = "debtor"
    CREDITOR = "creditor"


@record
class FinalStatus:
    """The switch's final word on a payment: `ACSC`/`ACCC` or `RJCT` with its reason."""

    uetr: str
    status: str
    reason: str | None
    role: Role


@record
class SentPayment:
    """A pacs.008 the bank sent: its identifications and the exact bytes, to resend or reuse."""

    uetr: str
    msg_id: str
    end_to_end_id: str
    tx_id: str
    amount: Decimal
    raw: bytes


@dataclass(frozen=True, slots=True, kw_only=True)
class InvalidMessage:
    """A message from the switch that failed the scheme schemas (or could not be read)."""

    raw: bytes
    issues: tuple[str, ...]


class _Bounded(Generic[K, V]):
    """An insertion-ordered map that forgets its oldest entries beyond `limit`."""

    __slots__ = ("_data", "_limit")

    def __init__(self, limit: int) -> None:
        self._data: dict[K, V] = {}
        self._limit = limit

    def __setitem__(self, key: K, value: V) -> None:
        data = self._data
        data[key] = value
        if len(data) > self._limit:
            del data[next(iter(data))]

    def get(self, key: K) -> V | None:
        return self._data.get(key)

    def __contains__(self, key: object) -> bool:
        return key in self._data

    def pop(self, key: K) -> V | None:
        return self._data.pop(key, None)

    def __len__(self) -> int:
        return len(self._data)


@record
class _Payment:
    """What answering one forwarded transaction needs."""

    msg_id: str
    end_to_end_id: str | None
    tx_id: str | None
    uetr: str | None
    account: str | None
    creditor_bicfi: str | None
    creditor_member_id: str | None


@record
class _Status:
    """One transaction status reported by the switch."""

    msg_id: str | None
    uetr: str | None
    status: str
    reason: str | None


_HEAD: Final = "{" + MessageType.HEAD_001.namespace + "}"
_BIZ_MSG_IDR: Final = _HEAD + "BizMsgIdr"
_RECEIVED: Final = {t: f"received:{t.family}" for t in MessageType}
_ANSWERED: Final = {s: f"answered:{s}" for s in (ACSP, RJCT)}


def _view_payments(doc: etree._Element) -> list[_Payment]:
    """The forwarded transactions of a pacs.008 Document, through the typed view."""
    ct = views.credit_transfer(doc)
    return [
        _Payment(
            msg_id=ct.msg_id,
            end_to_end_id=tx.end_to_end_id,
            tx_id=tx.tx_id,
            uetr=tx.uetr,
            account=tx.creditor_account.id if tx.creditor_account is not None else None,
            creditor_bicfi=tx.creditor_agent.bicfi,
            creditor_member_id=tx.creditor_agent.member_id,
        )
        for tx in ct.transactions
    ]


def _view_statuses(doc: etree._Element) -> list[_Status]:
    """The transaction statuses of a pacs.002 Document, through the typed view."""
    return [
        _Status(
            msg_id=tx.original_msg_id,
            uetr=tx.original_uetr,
            status=tx.status or "",
            reason=tx.reasons[0] if tx.reasons else None,
        )
        for tx in views.status_report(doc).transactions
    ]


# --- reading without a tree (fast mode) ----------------------------------------------
#
# The switch writes its messages in one canonical shape: default namespaces, no prefixes,
# no whitespace between elements. For messages in that shape a load-generating bank can
# read the few fields it needs with regular expressions at a fraction of a tree's cost.
# Anything else (another shape, an entity in a value, several transactions) falls back
# to the parser. Tests check both readers agree.

_RX_TYPE: Final = re.compile(rb"<MsgDefIdr>([a-z]{4}\.\d{3}\.\d{3}\.\d{2})</MsgDefIdr>")
_RX_BIZ: Final = re.compile(rb"<BizMsgIdr>([^<&]+)</BizMsgIdr>")
_RX_ST: Final = re.compile(
    rb"<TxInfAndSts><OrgnlGrpInf><OrgnlMsgId>([^<&]+)</OrgnlMsgId>.*?"
    rb"<OrgnlUETR>([^<&]+)</OrgnlUETR><TxSts>([^<&]+)</TxSts>"
    rb"(?:<StsRsnInf><Rsn><Cd>([^<&]+)</Cd>)?",
    re.DOTALL,
)
# The pacs.008's fields in four searches, each from where the one before matched and each
# starting with a literal, which the regular expression engine scans for quickly; one
# expression with `.*?` between the parts tried every offset of the message in turn.
_RX_CT_GROUP: Final = re.compile(rb"<GrpHdr><MsgId>([^<&]+)</MsgId>")
_RX_CT_IDS: Final = re.compile(
    rb"<CdtTrfTxInf><PmtId>(?:<InstrId>[^<&]*</InstrId>)?"
    rb"<EndToEndId>([^<&]+)</EndToEndId><TxId>([^<&]+)</TxId><UETR>([^<&]+)</UETR>"
)
_RX_CT_AGENT: Final = re.compile(
    rb"<CdtrAgt><FinInstnId>(?:<BICFI>([^<&]+)</BICFI>)?"
    rb"(?:<ClrSysMmbId><ClrSysId><Cd>[^<&]+</Cd></ClrSysId><MmbId>([^<&]+)</MmbId>)?"
)
_RX_CT_ACCOUNT: Final = re.compile(
    rb"<CdtrAcct><Id>(?:<IBAN>([^<&]+)</IBAN>|<Othr><Id>([^<&]+)</Id>)"
)
_PACS002_DOC: Final = f'<Document xmlns="{MessageType.PACS_002.namespace}">'.encode()
_PACS008_DOC: Final = f'<Document xmlns="{MessageType.PACS_008.namespace}">'.encode()


def _s(b: bytes | None) -> str | None:
    return b.decode() if b is not None else None


def fast_read(
    data: bytes,
) -> tuple[str, MessageType, list[_Payment] | list[_Status]] | None:
    """(BizMsgIdr, type, payments or statuses) of a canonical one-transaction message."""
    t = _RX_TYPE.search(data)
    biz = _RX_BIZ.search(data)
    if t is None or biz is None:
        return None
    mtype = t.group(1).decode()
    if mtype == MessageType.PACS_002.value:
        if _PACS002_DOC not in data or data.count(b"<TxInfAndSts>") != 1:
            return None
        m = _RX_ST.search(data)
        if m is None:
            return None
        status = _Status(msg_id=_s(m[1]), uetr=_s(m[2]), status=m[3].decode(), reason=_s(m[4]))
        return biz[1].decode(), MessageType.PACS_002, [status]
    if mtype == MessageType.PACS_008.value:
        if _PACS008_DOC not in data or data.count(b"<CdtTrfTxInf>") != 1:
            return None
        group = _RX_CT_GROUP.search(data)
        ids = _RX_CT_IDS.search(data, group.end()) if group is not None else None
        agent = _RX_CT_AGENT.search(data, ids.end()) if ids is not None else None
        account = _RX_CT_ACCOUNT.search(data, agent.end()) if agent is not None else None
        if group is None or ids is None or agent is None or account is None:
            return None
        payment = _Payment(
            msg_id=group[1].decode(),
            end_to_end_id=ids[1].decode(),
            tx_id=ids[2].decode(),
            uetr=ids[3].decode(),
            account=_s(account[1] or account[2]),
            creditor_bicfi=_s(agent[1]),
            creditor_member_id=_s(agent[2]),
        )
        return biz[1].decode(), MessageType.PACS_008, [payment]
    return None


class SimulatedBank:
    """A participant bank on a channel: pays, answers forwarded payments, records statuses."""

    def __init__(
        self,
        *,
        bicfi: str,
        member_id: str,
        name: str,
        channel: ParticipantChannel,
        behaviours: Mapping[str, Behaviour | str] | None = None,
        response_timeout: float = 5.0,
        switch: Agent = SWITCH_AGENT,
        fast: bool = True,
        name_agents_by: Literal["BICFI", "USABA"] = "BICFI",
        debtor_name: str | None = None,
        debtor_account: str = "000000000001",
        registry: SchemaRegistry | None = None,
        max_tracked: int = 1_000_000,
    ) -> None:
        if not _BICFI.fullmatch(bicfi):
            raise ValueError(f"not a BICFI: {bicfi!r}")
        if not _MEMBER_ID.fullmatch(member_id):
            raise ValueError(f"member id must be 9 digits: {member_id!r}")
        if name_agents_by not in ("BICFI", "USABA"):
            raise ValueError(f"name_agents_by must be BICFI or USABA, not {name_agents_by!r}")
        self.bicfi = bicfi
        self.member_id = member_id
        self.name = name
        self.fast = fast
        self.name_agents_by = name_agents_by
        self.response_timeout = response_timeout
        self._channel = channel
        self._registry = registry
        self._bicfi11 = normalize_bicfi(bicfi)
        behaviours = behaviours or {}
        self._behaviours: dict[str, Behaviour] = {
            account: b if isinstance(b, Behaviour) else Behaviour.parse(b)
            for account, b in behaviours.items()
        }
        self._default = self._behaviours.pop("*", ACCEPT)

        self.identity = Agent(bicfi=bicfi, member_id=member_id, clearing_system=USABA)
        self.agent = self.in_kind(self.identity)
        """The bank as it names itself in documents."""
        self.switch = self.in_kind(switch)
        """The switch as the bank names it in documents."""
        self._hdr_self = Agent(bicfi=bicfi)
        self._hdr_switch = Agent(bicfi=switch.bicfi) if switch.bicfi else self.switch
        self.debtor_name = debtor_name or f"Customer of {name}"[:140]
        self.debtor_account = debtor_account
        self._ct_template = CreditTransferTemplate(
            sender=self._hdr_self,
            receiver=self._hdr_switch,
            debtor_agent=self.agent,
            debtor_name=self.debtor_name,
            debtor_account=debtor_account,
        )
        self._sts_template = StatusTemplate(
            sender=self._hdr_self,
            receiver=self._hdr_switch,
            instructing_agent=self.agent,
            instructed_agent=self.switch,
        )

        self._prefix = bicfi[:4]
        self._run_id = secrets.token_hex(4)
        self._seq = 0
        self._stopped = False
        self._receiving = False
        self._runner: asyncio.Task[None] | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._seen: _Bounded[str, None] = _Bounded(max_tracked)
        self._sent: _Bounded[str, str] = _Bounded(max_tracked)
        """UETR -> MsgId of the payments this bank sent."""
        self._sent_msgs: _Bounded[str, str] = _Bounded(max_tracked)
        """MsgId -> UETR of the payments this bank sent."""
        self._finals: _Bounded[tuple[str, Role], FinalStatus] = _Bounded(max_tracked)
        self._latest: _Bounded[str, tuple[str, str | None]] = _Bounded(max_tracked)
        self._waiters: dict[tuple[str, Role], list[asyncio.Future[FinalStatus]]] = {}

        self.counters: Counter[str] = Counter()
        """What happened: `received` (and `received:pacs.008`, ... by message family),
        `duplicate`, `unusable`, `invalid`, `errors`, `misrouted`, `sent` (payments),
        `resent`, `inquiries`, `answered` (and `answered:ACSP`, `answered:RJCT`),
        `silent`, `late`, `status:<TxSts>` for every pacs.002 status received, `final:ACSC`,
        `final:ACCC`, `final:RJCT`, `rejects` (admi.002), `events` (admi.004), `lookups`
        (acmt.023 sent) and `lookup_answers` (acmt.024)."""
        self.lookup_answers: _Bounded[str, views.IdentificationVerificationReport] = _Bounded(
            max_tracked
        )
        """The switch's acmt.024 answers, by the MsgId of the acmt.023 they answer."""
        self.rejects: list[views.MessageReject] = []
        self.events: list[views.SystemEvent] = []
        self.invalid: list[InvalidMessage] = []
        self.errors: list[BaseException] = []

    # --- identity ------------------------------------------------------------------------

    def in_kind(self, agent: Agent) -> Agent:
        """`agent` named the way this bank names agents (as given if it lacks that kind)."""
        if self.name_agents_by == "USABA":
            if agent.member_id is not None and agent.bicfi is not None:
                return Agent(member_id=agent.member_id, clearing_system=agent.clearing_system)
            return agent
        if agent.bicfi is not None and agent.member_id is not None:
            return Agent(bicfi=agent.bicfi)
        return agent

    def next_id(self) -> str:
        """A fresh MsgId / BizMsgIdr, unique to this bank (24 characters)."""
        self._seq += 1
        return f"{self._prefix}{self._seq:012d}{self._run_id}"

    def behaviour(self, account: str | None) -> Behaviour:
        """The behaviour configured for `account` (the default when it is not listed)."""
        if account is None:
            return self._default
        return self._behaviours.get(account, self._default)

    # --- receiving -----------------------------------------------------------------------

    async def run(self) -> None:
        """Receive and handle messages from the switch until `stop()`."""
        channel = self._channel
        me = asyncio.current_task()
        self._runner = me
        try:
            while not self._stopped:
                self._receiving = True
                try:
                    data = await channel.receive()
                except asyncio.CancelledError:
                    if not self._stopped or me is None:
                        raise
                    me.uncancel()
                    return
                finally:
                    self._receiving = False
                if data is None:
                    continue
                try:
                    await self.handle(data)
                except Exception as exc:
                    self.counters["errors"] += 1
                    self.errors.append(exc)
                    log.exception("%s: failed to handle a message from the switch", self.bicfi)
        finally:
            self._runner = None

    def stop(self) -> None:
        """Make `run` return (at once when it is waiting) and drop pending late answers."""
        self._stopped = True
        runner = self._runner
        if runner is not None and self._receiving:
            runner.cancel()
        for task in tuple(self._tasks):
            task.cancel()

    async def handle(self, data: bytes) -> None:
        """Handle one message from the switch."""
        counters = self.counters
        counters["received"] += 1
        if self.fast:
            quick = fast_read(data)
            if quick is not None:
                await self._handle_quick(*quick)
                return
        try:
            msg = parse(data)
        except UnusableMessage as exc:
            counters["unusable"] += 1
            self.invalid.append(InvalidMessage(raw=data, issues=(str(exc),)))
            return
        if not self.fast:
            issues = validate(msg, self._registry)
            if issues:
                self._invalid(data, issues)
                return
        if msg.header is not None:
            biz_msg_idr = msg.header.findtext(_BIZ_MSG_IDR)
            if biz_msg_idr is not None:
                if biz_msg_idr in self._seen:
                    counters["duplicate"] += 1
                    return
                self._seen[biz_msg_idr] = None
        mtype = msg.mtype
        counters[_RECEIVED[mtype]] += 1
        doc = msg.document
        if doc is None:
            counters["ignored"] += 1
            return
        try:
            if mtype is MessageType.PACS_008:
                payments = _view_payments(doc)
            elif mtype is MessageType.PACS_002:
                statuses = _view_statuses(doc)
            elif mtype is MessageType.ADMI_002:
                reject = views.message_reject(doc)
            elif mtype is MessageType.ADMI_004:
                event = views.system_event(doc)
            elif mtype is MessageType.ACMT_024:
                answer = views.identification_verification_report(doc)
        except (ValueError, ArithmeticError, KeyError) as exc:
            self._invalid(data, [str(exc)])
            return
        if mtype is MessageType.PACS_008:
            await self._on_payments(payments)
        elif mtype is MessageType.PACS_002:
            self._on_statuses(statuses)
        elif mtype is MessageType.ADMI_002:
            counters["rejects"] += 1
            self.rejects.append(reject)
        elif mtype is MessageType.ADMI_004:
            counters["events"] += 1
            self.events.append(event)
        elif mtype is MessageType.ACMT_024:
            counters["lookup_answers"] += 1
            self.lookup_answers[answer.original_msg_id] = answer
        else:
            counters["ignored"] += 1

    async def _handle_quick(
        self, biz_msg_idr: str, mtype: MessageType, found: list[_Payment] | list[_Status]
    ) -> None:
        """Handle a message read by `fast_read` (the same steps as `handle`)."""
        counters = self.counters
        if biz_msg_idr in self._seen:
            counters["duplicate"] += 1
            return
        self._seen[biz_msg_idr] = None
        counters[_RECEIVED[mtype]] += 1
        if mtype is MessageType.PACS_008:
            await self._on_payments([p for p in found if isinstance(p, _Payment)])
        else:
            self._on_statuses([st for st in found if isinstance(st, _Status)])

    def _invalid(self, data: bytes, issues: list[SchemaIssue] | list[str]) -> None:
        self.counters["invalid"] += 1
        self.invalid.append(InvalidMessage(raw=data, issues=tuple(str(i) for i in issues)))

    def _names_me(self, bicfi: str | None, member_id: str | None) -> bool:
        if bicfi is not None and normalize_bicfi(bicfi) != self._bicfi11:
            return False
        return member_id is None or member_id == self.member_id

    async def _on_payments(self, payments: list[_Payment]) -> None:
        counters = self.counters
        for p in payments:
            if not self._names_me(p.creditor_bicfi, p.creditor_member_id):
                counters["misrouted"] += 1
            behaviour = self.behaviour(p.account)
            action = behaviour.action
            if action is Action.ACCEPT:
                await self._answer(p, ACSP)
            elif action is Action.REJECT:
                await self._answer(p, RJCT, behaviour.reason)
            elif action is Action.TWICE:
                await self._answer(p, ACSP)
                await self._answer(p, ACSP)
            elif action is Action.LATE:
                counters["late"] += 1
                task = asyncio.create_task(self._answer_late(p))
                self._tasks.add(task)
                task.add_done_callback(self._tasks.discard)
            else:
                counters["silent"] += 1

    async def _answer_late(self, payment: _Payment) -> None:
        await asyncio.sleep(self.response_timeout + _LATE_MARGIN)
        await self._answer(payment, ACSP)

    async def _answer(self, p: _Payment, status: str, reason: str | None = None) -> None:
        msg_id = self.next_id()
        if self.fast:
            raw = self._sts_template.render(
                msg_id,
                p.msg_id,
                p.uetr,
                status,
                original_end_to_end_id=p.end_to_end_id,
                original_tx_id=p.tx_id,
                reason=reason,
            )
        else:
            created = datetime.now(UTC)
            doc = status_report(
                msg_id=msg_id,
                created=created,
                status=status,
                original_msg_id=p.msg_id,
                original_end_to_end_id=p.end_to_end_id,
                original_tx_id=p.tx_id,
                original_uetr=p.uetr,
                reason=reason,
                instructing_agent=self.agent,
                instructed_agent=self.switch,
            )
            raw = envelope(
                self._hdr_self, self._hdr_switch, MessageType.PACS_002, msg_id, doc, created
            )
        await self._channel.send(raw)
        counters = self.counters
        counters["answered"] += 1
        counters[_ANSWERED[status]] += 1

    def _on_statuses(self, statuses: list[_Status]) -> None:
        counters = self.counters
        for s in statuses:
            status, reason, uetr = s.status, s.reason, s.uetr
            counters["status:" + status] += 1
            if uetr is None and s.msg_id is not None:
                uetr = self._sent_msgs.get(s.msg_id)
            if uetr is None:
                continue
            self._latest[uetr] = (status, reason)
            role = self._final_role(uetr, status)
            if role is None:
                continue
            final = FinalStatus(uetr=uetr, status=status, reason=reason, role=role)
            self._finals[(uetr, role)] = final
            counters["final:" + status] += 1
            for waiter in self._waiters.pop((uetr, role), ()):
                if not waiter.done():
                    waiter.set_result(final)

    def _final_role(self, uetr: str, status: str) -> Role | None:
        if status == ACSC:
            return Role.DEBTOR
        if status == ACCC:
            return Role.CREDITOR
        if status == RJCT:
            if uetr in self._sent and (uetr, Role.DEBTOR) not in self._finals:
                return Role.DEBTOR
            return Role.CREDITOR
        return None

    # --- sending -------------------------------------------------------------------------

    async def lookup(self, alias_type: str, alias: str, *, end_user: str | None = None) -> str:
        """Ask the switch who owns an alias (acmt.023); returns the request's MsgId.

        The answer lands in `lookup_answers` under that MsgId.
        """
        msg_id = self.next_id()
        created = datetime.now(UTC)
        doc = identification_verification_request(
            msg_id=msg_id,
            created=created,
            alias_type=alias_type,
            alias=alias,
            assigner=self.agent,
            assignee=self.in_kind(self.switch),
            end_user=end_user,
        )
        raw = envelope(self._hdr_self, self._hdr_switch, MessageType.ACMT_023, msg_id, doc, created)
        await self._channel.send(raw)
        self.counters["lookups"] += 1
        return msg_id

    async def pay(
        self,
        *,
        creditor_agent: Agent,
        amount: Decimal,
        creditor_account: str | None = None,
        creditor_name: str = "Simulated Creditor",
        uetr: str | None = None,
        msg_id: str | None = None,
        end_to_end_id: str | None = None,
        tx_id: str | None = None,
        instr_id: str | None = None,
        debtor_agent: Agent | None = None,
        debtor_name: str | None = None,
        debtor_account: str | None = None,
        proxy: Proxy | None = None,
        remittance: str | None = None,
        created: datetime | None = None,
    ) -> SentPayment:
        """Send a pacs.008 to the switch; ids not given are fresh (UETR: uuid4).

        Without `creditor_account` the payment goes to `DEFAULT_CREDITOR_ACCOUNT`, or, with
        a `proxy`, to account `NOTPROVIDED` with the alias in `CdtrAcct/Prxy`.
        """
        if creditor_account is None and proxy is None:
            creditor_account = DEFAULT_CREDITOR_ACCOUNT
        n = self.next_id()
        msg_id = msg_id or n
        end_to_end_id = end_to_end_id or "E" + n
        tx_id = tx_id or "T" + n
        uetr = uetr or str(uuid.uuid4())
        created = created or datetime.now(UTC)
        cdtr_agt = self.in_kind(creditor_agent)
        dbtr_agt = self.agent if debtor_agent is None else self.in_kind(debtor_agent)
        if self.fast:
            raw = self._ct_template.render(
                msg_id,
                uetr,
                end_to_end_id,
                tx_id,
                amount,
                cdtr_agt,
                creditor_account,
                creditor_name=creditor_name,
                creditor_proxy=proxy,
                remittance=remittance,
                instr_id=instr_id,
                created=created,
                debtor_agent=dbtr_agt,
                debtor_name=debtor_name,
                debtor_account=debtor_account,
            )
        else:
            doc = credit_transfer(
                msg_id=msg_id,
                created=created,
                uetr=uetr,
                end_to_end_id=end_to_end_id,
                tx_id=tx_id,
                instr_id=instr_id,
                amount=amount,
                debtor_agent=dbtr_agt,
                creditor_agent=cdtr_agt,
                debtor_name=debtor_name or self.debtor_name,
                debtor_account=debtor_account or self.debtor_account,
                creditor_name=creditor_name,
                creditor_account=creditor_account,
                creditor_proxy=proxy,
                remittance=remittance,
                settlement_date=business_date(created),
            )
            raw = envelope(
                self._hdr_self, self._hdr_switch, MessageType.PACS_008, msg_id, doc, created
            )
        self._sent[uetr] = msg_id
        self._sent_msgs[msg_id] = uetr
        await self._channel.send(raw)
        self.counters["sent"] += 1
        return SentPayment(
            uetr=uetr,
            msg_id=msg_id,
            end_to_end_id=end_to_end_id,
            tx_id=tx_id,
            amount=amount,
            raw=raw,
        )

    async def resend(self, raw: bytes) -> None:
        """Send `raw` again, unchanged (a duplicate, as after a connector crash)."""
        await self._channel.send(raw)
        self.counters["resent"] += 1

    async def inquire(
        self,
        uetr: str,
        original_msg_id: str,
        *,
        original_end_to_end_id: str | None = None,
        original_tx_id: str | None = None,
    ) -> str:
        """Send a pacs.028 asking the status of a payment; return its MsgId."""
        msg_id = self.next_id()
        created = datetime.now(UTC)
        doc = status_request(
            msg_id=msg_id,
            created=created,
            original_msg_id=original_msg_id,
            original_uetr=uetr,
            original_end_to_end_id=original_end_to_end_id,
            original_tx_id=original_tx_id,
            instructing_agent=self.agent,
            instructed_agent=self.switch,
        )
        raw = envelope(self._hdr_self, self._hdr_switch, MessageType.PACS_028, msg_id, doc, created)
        await self._channel.send(raw)
        self.counters["inquiries"] += 1
        return msg_id

    # --- outcomes ------------------------------------------------------------------------

    def _role(self, uetr: str, role: Role | None) -> Role:
        if role is not None:
            return role
        return Role.DEBTOR if uetr in self._sent else Role.CREDITOR

    def final(self, uetr: str, role: Role | None = None) -> FinalStatus | None:
        """The final status recorded for `uetr` (as debtor if this bank sent it), if any."""
        return self._finals.get((uetr, self._role(uetr, role)))

    def latest_status(self, uetr: str) -> tuple[str, str | None] | None:
        """The last status (and reason) the switch reported for `uetr`, final or not."""
        return self._latest.get(uetr)

    async def wait_final(
        self, uetr: str, timeout: float, role: Role | None = None
    ) -> FinalStatus | None:
        """The final status of `uetr`, waiting up to `timeout` seconds; None if none came."""
        key = (uetr, self._role(uetr, role))
        found = self._finals.get(key)
        if found is not None:
            return found
        waiter: asyncio.Future[FinalStatus] = asyncio.get_running_loop().create_future()
        self._waiters.setdefault(key, []).append(waiter)
        try:
            return await asyncio.wait_for(waiter, timeout)
        except TimeoutError:
            return None
        finally:
            waiting = self._waiters.get(key)
            if waiting is not None and waiter in waiting:
                waiting.remove(waiter)
                if not waiting:
                    del self._waiters[key]

    def forget(self, uetr: str) -> None:
        """Drop what the bank remembers about `uetr` (long load runs)."""
        msg_id = self._sent.pop(uetr)
        if msg_id is not None:
            self._sent_msgs.pop(msg_id)
        self._latest.pop(uetr)
        for role in Role:
            self._finals.pop((uetr, role))
