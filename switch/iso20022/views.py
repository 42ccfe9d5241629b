"""Frozen, typed views of what the switch needs from each message.

Theory: the switch never works on raw XML. After validation, a message is read once into
small immutable dataclasses carrying exactly the fields clearing needs (ids, UETR,
amounts as `Decimal` with their currency, agents by BICFI or by USABA member id,
accounts or proxy, statuses and reasons). Everything else stays in the archived bytes.
Extraction walks direct children with precomputed qualified names, which keeps it cheap
enough for the hot path. Views assume a schema-valid document: a mandatory element
that is missing raises `ViewError`, naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Final

from lxml import etree

from switch.iso20022.parse import Message
from switch.iso20022.registry import MessageType

USABA: Final = "USABA"


class ViewError(ValueError):
    """A document lacks an element a view needs (it was not validated first)."""


@dataclass(frozen=True, slots=True, kw_only=True)
class Amount:
    """An amount with its currency, exactly as written (never a float)."""

    value: Decimal
    currency: str

    def __str__(self) -> str:
        return f"{self.value} {self.currency}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Agent:
    """A financial institution named by BICFI, by clearing member id, or both."""

    bicfi: str | None = None
    member_id: str | None = None
    clearing_system: str | None = None

    def __post_init__(self) -> None:
        if self.bicfi is None and self.member_id is None:
            raise ViewError("an agent needs a BICFI or a clearing system member id")

    @property
    def key(self) -> str:
        """The identifier the agent was named by (BICFI first)."""
        return self.bicfi or self.member_id or ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Proxy:
    """An alias standing for an account (RULEBOOK §5): type code or proprietary type, and id."""

    type_code: str | None
    type_proprietary: str | None
    id: str

    @property
    def type(self) -> str:
        """The alias type: VPA, EMAL, TELE, EVP or what the sender wrote."""
        return self.type_code or self.type_proprietary or ""


@dataclass(frozen=True, slots=True, kw_only=True)
class Account:
    """A cash account: IBAN or other identification, and/or a proxy."""

    iban: str | None = None
    other_id: str | None = None
    proxy: Proxy | None = None

    @property
    def id(self) -> str | None:
        """The account identifier as written (IBAN or Othr/Id)."""
        return self.iban or self.other_id


@dataclass(frozen=True, slots=True, kw_only=True)
class Header:
    """The Business Application Header (head.001.001.02)."""

    from_bicfi: str | None
    from_member_id: str | None
    to_bicfi: str | None
    to_member_id: str | None
    biz_msg_idr: str
    msg_def_idr: str
    created: str
    signed: bool

    @property
    def sender(self) -> str:
        """The sender as named in `Fr` (BICFI first)."""
        return self.from_bicfi or self.from_member_id or ""


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditTransferTx:
    """One transaction of a pacs.008 (CdtTrfTxInf)."""

    instr_id: str | None
    end_to_end_id: str
    tx_id: str | None
    uetr: str | None
    amount: Amount
    settlement_date: str | None
    charge_bearer: str
    instructing_agent: Agent | None
    instructed_agent: Agent | None
    debtor_name: str | None
    debtor_account: Account | None
    debtor_agent: Agent
    creditor_agent: Agent
    creditor_name: str | None
    creditor_account: Account | None


@dataclass(frozen=True, slots=True, kw_only=True)
class CreditTransfer:
    """A pacs.008.001.08 FIToFICustomerCreditTransfer."""

    msg_id: str
    created: str
    nb_of_txs: int
    settlement_method: str
    total_amount: Amount | None
    instructing_agent: Agent | None
    instructed_agent: Agent | None
    transactions: tuple[CreditTransferTx, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class TxStatus:
    """One transaction status of a pacs.002 (TxInfAndSts)."""

    original_msg_id: str | None
    original_msg_name: str | None
    original_instr_id: str | None
    original_end_to_end_id: str | None
    original_tx_id: str | None
    original_uetr: str | None
    status: str | None
    reasons: tuple[str, ...]
    additional_info: tuple[str, ...]
    instructing_agent: Agent | None
    instructed_agent: Agent | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusReport:
    """A pacs.002.001.10 FIToFIPaymentStatusReport."""

    msg_id: str
    created: str
    instructing_agent: Agent | None
    instructed_agent: Agent | None
    transactions: tuple[TxStatus, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusRequestTx:
    """One transaction asked about in a pacs.028 (TxInf)."""

    status_request_id: str | None
    original_msg_id: str | None
    original_msg_name: str | None
    original_instr_id: str | None
    original_end_to_end_id: str | None
    original_tx_id: str | None
    original_uetr: str | None
    instructing_agent: Agent | None
    instructed_agent: Agent | None


@dataclass(frozen=True, slots=True, kw_only=True)
class StatusRequest:
    """A pacs.028.001.03 FIToFIPaymentStatusRequest."""

    msg_id: str
    created: str
    instructing_agent: Agent | None
    instructed_agent: Agent | None
    transactions: tuple[StatusRequestTx, ...]


@dataclass(frozen=True, slots=True, kw_only=True)
class MessageReject:
    """An admi.002.001.01 message reject."""

    reference: str
    reason: str
    rejected_at: str | None
    error_location: str | None
    description: str | None


@dataclass(frozen=True, slots=True, kw_only=True)
class SystemEvent:
    """An admi.004.001.02 system event notification."""

    code: str
    params: tuple[str, ...]
    description: str | None
    time: str | None


class _Names:
    """Qualified tag names of one namespace, computed once."""

    __slots__ = ("_cache", "ns")

    def __init__(self, ns: str) -> None:
        self.ns = ns
        self._cache: dict[str, str] = {}

    def __call__(self, local: str) -> str:
        q = self._cache.get(local)
        if q is None:
            q = self._cache[local] = f"{{{self.ns}}}{local}"
        return q


_NAMES: Final = {t: _Names(t.namespace) for t in MessageType}


def _child(el: etree._Element | None, q: str) -> etree._Element | None:
    if el is None:
        return None
    return el.find(q)


def _text(el: etree._Element | None, q: str) -> str | None:
    c = _child(el, q)
    if c is None or c.text is None:
        return None
    return c.text.strip()


def _need(el: etree._Element | None, q: str) -> etree._Element:
    c = _child(el, q)
    if c is None:
        raise ViewError(f"missing mandatory element {etree.QName(q).localname}")
    return c


def _need_text(el: etree._Element | None, q: str) -> str:
    t = _text(el, q)
    if t is None:
        raise ViewError(f"missing mandatory element {etree.QName(q).localname}")
    return t


def _amount(el: etree._Element | None) -> Amount | None:
    if el is None or el.text is None:
        return None
    return Amount(value=Decimal(el.text.strip()), currency=el.get("Ccy", ""))


def _agent(n: _Names, el: etree._Element | None) -> Agent | None:
    """Agent from a BranchAndFinancialInstitutionIdentification6 element."""
    fin = _child(el, n("FinInstnId"))
    if fin is None:
        return None
    bicfi = _text(fin, n("BICFI"))
    mmb = _child(fin, n("ClrSysMmbId"))
    member_id = _text(mmb, n("MmbId"))
    system = _text(_child(mmb, n("ClrSysId")), n("Cd")) if mmb is not None else None
    if bicfi is None and member_id is None:
        return None
    return Agent(bicfi=bicfi, member_id=member_id, clearing_system=system)


def _need_agent(n: _Names, el: etree._Element | None, name: str) -> Agent:
    agent = _agent(n, _child(el, n(name)))
    if agent is None:
        raise ViewError(f"{name} names no BICFI and no clearing system member id")
    return agent


def _account(n: _Names, el: etree._Element | None) -> Account | None:
    if el is None:
        return None
    ident = _child(el, n("Id"))
    iban = _text(ident, n("IBAN"))
    other = _text(_child(ident, n("Othr")), n("Id"))
    proxy = None
    prxy = _child(el, n("Prxy"))
    if prxy is not None:
        tp = _child(prxy, n("Tp"))
        proxy = Proxy(
            type_code=_text(tp, n("Cd")),
            type_proprietary=_text(tp, n("Prtry")),
            id=_need_text(prxy, n("Id")),
        )
    return Account(iban=iban, other_id=other, proxy=proxy)


def header(el: etree._Element) -> Header:
    """The typed view of an AppHdr element."""
    n = _NAMES[MessageType.HEAD_001]
    fr = _child(_child(_need(el, n("Fr")), n("FIId")), n("FinInstnId"))
    to = _child(_child(_need(el, n("To")), n("FIId")), n("FinInstnId"))
    return Header(
        from_bicfi=_text(fr, n("BICFI")),
        from_member_id=_text(_child(fr, n("ClrSysMmbId")), n("MmbId")),
        to_bicfi=_text(to, n("BICFI")),
        to_member_id=_text(_child(to, n("ClrSysMmbId")), n("MmbId")),
        biz_msg_idr=_need_text(el, n("BizMsgIdr")),
        msg_def_idr=_need_text(el, n("MsgDefIdr")),
        created=_need_text(el, n("CreDt")),
        signed=el.find(n("Sgntr")) is not None,
    )


def credit_transfer(doc: etree._Element) -> CreditTransfer:
    """The typed view of a pacs.008.001.08 Document."""
    n = _NAMES[MessageType.PACS_008]
    body = _need(doc, n("FIToFICstmrCdtTrf"))
    grp = _need(body, n("GrpHdr"))
    txs: list[CreditTransferTx] = []
    for tx in body.iterchildren(n("CdtTrfTxInf")):
        pmt = _need(tx, n("PmtId"))
        amount = _amount(_need(tx, n("IntrBkSttlmAmt")))
        assert amount is not None
        txs.append(
            CreditTransferTx(
                instr_id=_text(pmt, n("InstrId")),
                end_to_end_id=_need_text(pmt, n("EndToEndId")),
                tx_id=_text(pmt, n("TxId")),
                uetr=_text(pmt, n("UETR")),
                amount=amount,
                settlement_date=_text(tx, n("IntrBkSttlmDt")),
                charge_bearer=_need_text(tx, n("ChrgBr")),
                instructing_agent=_agent(n, _child(tx, n("InstgAgt"))),
                instructed_agent=_agent(n, _child(tx, n("InstdAgt"))),
                debtor_name=_text(_child(tx, n("Dbtr")), n("Nm")),
                debtor_account=_account(n, _child(tx, n("DbtrAcct"))),
                debtor_agent=_need_agent(n, tx, "DbtrAgt"),
                creditor_agent=_need_agent(n, tx, "CdtrAgt"),
                creditor_name=_text(_child(tx, n("Cdtr")), n("Nm")),
                creditor_account=_account(n, _child(tx, n("CdtrAcct"))),
            )
        )
    sttlm = _need(grp, n("SttlmInf"))
    return CreditTransfer(
        msg_id=_need_text(grp, n("MsgId")),
        created=_need_text(grp, n("CreDtTm")),
        nb_of_txs=int(_need_text(grp, n("NbOfTxs"))),
        settlement_method=_need_text(sttlm, n("SttlmMtd")),
        total_amount=_amount(_child(grp, n("TtlIntrBkSttlmAmt"))),
        instructing_agent=_agent(n, _child(grp, n("InstgAgt"))),
        instructed_agent=_agent(n, _child(grp, n("InstdAgt"))),
        transactions=tuple(txs),
    )


def status_report(doc: etree._Element) -> StatusReport:
    """The typed view of a pacs.002.001.10 Document."""
    n = _NAMES[MessageType.PACS_002]
    body = _need(doc, n("FIToFIPmtStsRpt"))
    grp = _need(body, n("GrpHdr"))
    group_info = _child(body, n("OrgnlGrpInfAndSts"))
    txs: list[TxStatus] = []
    for tx in body.iterchildren(n("TxInfAndSts")):
        orig = _child(tx, n("OrgnlGrpInf"))
        if orig is None:
            orig = group_info
        reasons: list[str] = []
        info: list[str] = []
        for rsn in tx.iterchildren(n("StsRsnInf")):
            r = _child(rsn, n("Rsn"))
            code = _text(r, n("Cd")) or _text(r, n("Prtry"))
            if code:
                reasons.append(code)
            info.extend((a.text or "").strip() for a in rsn.iterchildren(n("AddtlInf")))
        txs.append(
            TxStatus(
                original_msg_id=_text(orig, n("OrgnlMsgId")),
                original_msg_name=_text(orig, n("OrgnlMsgNmId")),
                original_instr_id=_text(tx, n("OrgnlInstrId")),
                original_end_to_end_id=_text(tx, n("OrgnlEndToEndId")),
                original_tx_id=_text(tx, n("OrgnlTxId")),
                original_uetr=_text(tx, n("OrgnlUETR")),
                status=_text(tx, n("TxSts")),
                reasons=tuple(reasons),
                additional_info=tuple(info),
                instructing_agent=_agent(n, _child(tx, n("InstgAgt"))),
                instructed_agent=_agent(n, _child(tx, n("InstdAgt"))),
            )
        )
    return StatusReport(
        msg_id=_need_text(grp, n("MsgId")),
        created=_need_text(grp, n("CreDtTm")),
        instructing_agent=_agent(n, _child(grp, n("InstgAgt"))),
        instructed_agent=_agent(n, _child(grp, n("InstdAgt"))),
        transactions=tuple(txs),
    )


def status_request(doc: etree._Element) -> StatusRequest:
    """The typed view of a pacs.028.001.03 Document."""
    n = _NAMES[MessageType.PACS_028]
    body = _need(doc, n("FIToFIPmtStsReq"))
    grp = _need(body, n("GrpHdr"))
    group_info = _child(body, n("OrgnlGrpInf"))
    txs: list[StatusRequestTx] = []
    for tx in body.iterchildren(n("TxInf")):
        orig = _child(tx, n("OrgnlGrpInf"))
        if orig is None:
            orig = group_info
        txs.append(
            StatusRequestTx(
                status_request_id=_text(tx, n("StsReqId")),
                original_msg_id=_text(orig, n("OrgnlMsgId")),
                original_msg_name=_text(orig, n("OrgnlMsgNmId")),
                original_instr_id=_text(tx, n("OrgnlInstrId")),
                original_end_to_end_id=_text(tx, n("OrgnlEndToEndId")),
                original_tx_id=_text(tx, n("OrgnlTxId")),
                original_uetr=_text(tx, n("OrgnlUETR")),
                instructing_agent=_agent(n, _child(tx, n("InstgAgt"))),
                instructed_agent=_agent(n, _child(tx, n("InstdAgt"))),
            )
        )
    return StatusRequest(
        msg_id=_need_text(grp, n("MsgId")),
        created=_need_text(grp, n("CreDtTm")),
        instructing_agent=_agent(n, _child(grp, n("InstgAgt"))),
        instructed_agent=_agent(n, _child(grp, n("InstdAgt"))),
        transactions=tuple(txs),
    )


def message_reject(doc: etree._Element) -> MessageReject:
    """The typed view of an admi.002.001.01 Document."""
    n = _NAMES[MessageType.ADMI_002]
    body = _need(doc, n("admi.002.001.01"))
    rsn = _need(body, n("Rsn"))
    return MessageReject(
        reference=_need_text(_need(body, n("RltdRef")), n("Ref")),
        reason=_need_text(rsn, n("RjctgPtyRsn")),
        rejected_at=_text(rsn, n("RjctnDtTm")),
        error_location=_text(rsn, n("ErrLctn")),
        description=_text(rsn, n("RsnDesc")),
    )


def system_event(doc: etree._Element) -> SystemEvent:
    """The typed view of an admi.004.001.02 Document."""
    n = _NAMES[MessageType.ADMI_004]
    evt = _need(_need(doc, n("SysEvtNtfctn")), n("EvtInf"))
    return SystemEvent(
        code=_need_text(evt, n("EvtCd")),
        params=tuple((p.text or "").strip() for p in evt.iterchildren(n("EvtParam"))),
        description=_text(evt, n("EvtDesc")),
        time=_text(evt, n("EvtTm")),
    )


View = CreditTransfer | StatusReport | StatusRequest | MessageReject | SystemEvent


def document_view(msg: Message) -> View | None:
    """The typed view of the message's Document, or None for a bare AppHdr."""
    doc = msg.document
    if doc is None:
        return None
    reader = _READERS[msg.mtype]
    return reader(doc)


_READERS: Final = {
    MessageType.PACS_008: credit_transfer,
    MessageType.PACS_002: status_report,
    MessageType.PACS_028: status_request,
    MessageType.ADMI_002: message_reject,
    MessageType.ADMI_004: system_event,
}
