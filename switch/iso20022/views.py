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

import functools
from collections.abc import Callable, Mapping
from decimal import Decimal
from typing import Final, TypeVar

from lxml import etree
from typing_extensions import dataclass_transform

from switch.iso20022.parse import Message
from switch.iso20022.registry import MessageType
from switch.records import record

USABA: Final = "USABA"


class ViewError(ValueError):
    """A document lacks an element a view needs (it was not validated first)."""


_T = TypeVar("_T")


@dataclass_transform(frozen_default=True, kw_only_default=True)
def view(cls: type[_T]) -> type[_T]:
    """A view class: a record (`switch.records`), immutable to the type checker.

    Views cross process boundaries (read in a worker process, decided on in the engine):
    a run-time frozen dataclass would unpickle through Python code for every field of
    every object, which costs as much as reading the message did; a record pickles as
    its field values in order and is restored by position (`switch.records`).
    """
    return record(cls)


@view
class Amount:
    """An amount with its currency, exactly as written (never a float)."""

    value: Decimal
    currency: str

    def __str__(self) -> str:
        return f"{self.value} {self.currency}"


@view
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


@view
class Proxy:
    """An alias standing for an account (RULEBOOK §5): type code or proprietary type, and id."""

    type_code: str | None
    type_proprietary: str | None
    id: str

    @property
    def type(self) -> str:
        """The alias type: VPA, EMAL, TELE, EVP or what the sender wrote."""
        return self.type_code or self.type_proprietary or ""


@view
class Account:
    """A cash account: IBAN or other identification, and/or a proxy."""

    iban: str | None = None
    other_id: str | None = None
    proxy: Proxy | None = None

    @property
    def id(self) -> str | None:
        """The account identifier as written (IBAN or Othr/Id)."""
        return self.iban or self.other_id


@view
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


@view
class CreditTransferTx:
    """One transaction of a pacs.008 (CdtTrfTxInf): what clearing it needs.

    Parties' names, addresses and the debtor's account stay in the archived message;
    the creditor account is read because it may be an alias the switch resolves.
    """

    instr_id: str | None
    end_to_end_id: str
    tx_id: str | None
    uetr: str | None
    amount: Amount
    settlement_date: str | None
    charge_bearer: str
    instructing_agent: Agent | None
    instructed_agent: Agent | None
    debtor_agent: Agent
    creditor_agent: Agent
    creditor_account: Account | None


@view
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


@view
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


@view
class StatusReport:
    """A pacs.002.001.10 FIToFIPaymentStatusReport."""

    msg_id: str
    created: str
    instructing_agent: Agent | None
    instructed_agent: Agent | None
    transactions: tuple[TxStatus, ...]


@view
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


@view
class StatusRequest:
    """A pacs.028.001.03 FIToFIPaymentStatusRequest."""

    msg_id: str
    created: str
    instructing_agent: Agent | None
    instructed_agent: Agent | None
    transactions: tuple[StatusRequestTx, ...]


@view
class MessageReject:
    """An admi.002.001.01 message reject."""

    reference: str
    reason: str
    rejected_at: str | None
    error_location: str | None
    description: str | None


@view
class SystemEvent:
    """An admi.004.001.02 system event notification."""

    code: str
    params: tuple[str, ...]
    description: str | None
    time: str | None


@view
class IdentificationVerification:
    """One verification of an acmt.023 (Vrfctn): the alias whose owner is asked for.

    `end_user` identifies the requesting bank's customer who asked, when the bank names
    one (RULEBOOK §5: the directory's per-end-user token bucket). ISO 20022 has no
    per-verification element for the asker: it is the message's creator
    (`Assgnmt/Cretr/Pty/Id/PrvtId/Othr/Id`, or `OrgId/Othr/Id` for a business customer;
    the scheme writes `SchmeNm/Cd` `CUST`, the bank's customer number), so it is the same
    for every verification of one message.
    """

    id: str
    proxy: Proxy
    end_user: str | None


@view
class IdentificationVerificationRequest:
    """An acmt.023.001.04 IdentificationVerificationRequest: an alias lookup (RULEBOOK §5).

    The assigner is the asking participant and the assignee the switch; in this scheme
    both are agents (`Agt`), never a party (`Pty`). `end_user` is read from
    `Assgnmt/Cretr` (see `IdentificationVerification`).
    """

    msg_id: str
    created: str
    assigner: Agent
    assignee: Agent
    end_user: str | None
    verifications: tuple[IdentificationVerification, ...]


@view
class VerificationReport:
    """One report of an acmt.024 (Rpt): the answer to one verification of an acmt.023.

    `verified` says whether the alias resolves. When it does, `agent` is the owning
    participant and `name` the owner's masked name (`UpdtdPtyAndAcctId/Agt` and
    `UpdtdPtyAndAcctId/Pty/Nm`); the account number is never reported (RULEBOOK §5).
    `reason` is the code of a negative answer (e.g. BE23, alias not found); `proxy` is the
    alias asked about, when the report repeats it (`OrgnlPtyAndAcctId/Acct/Prxy`). The
    builder of acmt.024 takes these views as its input.
    """

    original_id: str
    verified: bool
    reason: str | None = None
    proxy: Proxy | None = None
    agent: Agent | None = None
    name: str | None = None


@view
class IdentificationVerificationReport:
    """An acmt.024.001.04 IdentificationVerificationReport: the answer to an alias lookup."""

    msg_id: str
    created: str
    assigner: Agent
    assignee: Agent
    original_msg_id: str
    original_created: str | None
    reports: tuple[VerificationReport, ...]


@view
class ReportEntry:
    """One entry of an account statement: a booked movement of the account."""

    amount: Amount
    credit: bool
    status: str
    booked: str | None
    value: str | None
    reference: str | None
    """The account servicer's reference (`AcctSvcrRef`): the switch's journal reference."""
    kind: str | None
    """The proprietary bank transaction code (`BkTxCd/Prtry/Cd`): the journal kind."""
    end_to_end_id: str | None = None
    tx_id: str | None = None
    uetr: str | None = None


@view
class AccountStatement:
    """One statement (`Stmt`) of a camt.053: an account's balances and entries over a period.

    Balances are signed: a `DBIT` balance is read as a negative amount.
    """

    id: str
    sequence: int | None
    created: str | None
    period_from: str | None
    period_to: str | None
    account_id: str | None
    owner_bic: str | None
    servicer: Agent | None
    opening: Amount | None
    closing: Amount | None
    entries: tuple[ReportEntry, ...]


@view
class BankToCustomerStatement:
    """A camt.053.001.08 BankToCustomerStatement: the end-of-day statement (RULEBOOK §1, §7)."""

    msg_id: str
    created: str
    statements: tuple[AccountStatement, ...]


class _Names(dict[str, str]):
    """Qualified tag names of one namespace, computed on first use: `n["MsgId"]`."""

    def __init__(self, ns: str) -> None:
        super().__init__()
        self.ns = ns

    def __missing__(self, local: str) -> str:
        q = self[local] = f"{{{self.ns}}}{local}"
        return q


_NAMES: Final = {t: _Names(t.namespace) for t in MessageType}


_Kids = dict[object, etree._Element]
_NONE: Final[_Kids] = {}


def _kids(el: etree._Element | None, tags: tuple[str, ...] = ()) -> _Kids:
    """The children of `el` by tag: one pass, then lookups are dictionary hits.

    With `tags`, only those children are picked (libxml2 filters them, so the others cost
    no Python object). For elements that occur once (all those read this way) the last
    occurrence is the only one; repeating elements are read with `iterchildren`.
    """
    if el is None:
        return _NONE
    if tags:
        return {c.tag: c for c in el.iterchildren(*tags)}
    return {c.tag: c for c in el}


def _text(k: _Kids, q: str) -> str | None:
    c = k.get(q)
    if c is None:
        return None
    t = c.text
    return t.strip() if t is not None else None


def _need(k: _Kids, q: str) -> etree._Element:
    c = k.get(q)
    if c is None:
        raise ViewError(f"missing mandatory element {etree.QName(q).localname}")
    return c


def _need_text(k: _Kids, q: str) -> str:
    t = _text(k, q)
    if t is None:
        raise ViewError(f"missing mandatory element {etree.QName(q).localname}")
    return t


def _amount(el: etree._Element | None) -> Amount | None:
    if el is None or el.text is None:
        return None
    return Amount(value=Decimal(el.text.strip()), currency=el.get("Ccy", ""))


def _agent(n: _Names, el: etree._Element | None) -> Agent | None:
    """Agent from a BranchAndFinancialInstitutionIdentification6 (or Party44 FIId) element.

    `FinInstnId` is the first child of both; its children are read in one pass.
    """
    if el is None or len(el) == 0:
        return None
    fin = el[0]
    if fin.tag != n["FinInstnId"]:
        return None
    bicfi = member_id = system = None
    bicfi_tag, mmb_tag = n["BICFI"], n["ClrSysMmbId"]
    for c in fin:
        tag = c.tag
        if tag == bicfi_tag:
            bicfi = (c.text or "").strip() or None
        elif tag == mmb_tag:
            mmb = _kids(c)
            member_id = _text(mmb, n["MmbId"])
            system = _text(_kids(mmb.get(n["ClrSysId"])), n["Cd"])
    if bicfi is None and member_id is None:
        return None
    return _shared_agent(bicfi, member_id, system)


@functools.lru_cache(maxsize=4096)
def _shared_agent(bicfi: str | None, member_id: str | None, system: str | None) -> Agent:
    """One Agent object per identity among those seen lately.

    A message names the same few agents many times (instructing, instructed, debtor and
    creditor agent, and again in its header); a batch of messages read in a reader
    process then pickles each of them once, and the engine unpickles (and keeps) fewer
    objects. Agents are immutable, so sharing them is safe; the cache is bounded.
    """
    return Agent(bicfi=bicfi, member_id=member_id, clearing_system=system)


def _need_agent(n: _Names, k: _Kids, name: str) -> Agent:
    agent = _agent(n, k.get(n[name]))
    if agent is None:
        raise ViewError(f"{name} names no BICFI and no clearing system member id")
    return agent


def _account(n: _Names, el: etree._Element | None) -> Account | None:
    if el is None:
        return None
    k = _kids(el)
    ident = _kids(k.get(n["Id"]))
    iban = _text(ident, n["IBAN"])
    other = _text(_kids(ident.get(n["Othr"])), n["Id"])
    return Account(iban=iban, other_id=other, proxy=_proxy(n, k.get(n["Prxy"])))


def _proxy(n: _Names, el: etree._Element | None) -> Proxy | None:
    """Proxy from a ProxyAccountIdentification1 (`Prxy`) element."""
    if el is None:
        return None
    prxy = _kids(el)
    tp = _kids(prxy.get(n["Tp"]))
    return Proxy(
        type_code=_text(tp, n["Cd"]),
        type_proprietary=_text(tp, n["Prtry"]),
        id=_need_text(prxy, n["Id"]),
    )


def header(el: etree._Element) -> Header:
    """The typed view of an AppHdr element."""
    n = _NAMES[MessageType.HEAD_001]
    k = _kids(el)
    fr = _agent(n, _kids(_need(k, n["Fr"])).get(n["FIId"]))
    to = _agent(n, _kids(_need(k, n["To"])).get(n["FIId"]))
    return Header(
        from_bicfi=fr.bicfi if fr else None,
        from_member_id=fr.member_id if fr else None,
        to_bicfi=to.bicfi if to else None,
        to_member_id=to.member_id if to else None,
        biz_msg_idr=_need_text(k, n["BizMsgIdr"]),
        msg_def_idr=_need_text(k, n["MsgDefIdr"]),
        created=_need_text(k, n["CreDt"]),
        signed=n["Sgntr"] in k,
    )


_TX_READ: Final = tuple(
    _NAMES[MessageType.PACS_008][t]
    for t in (
        "PmtId",
        "IntrBkSttlmAmt",
        "IntrBkSttlmDt",
        "ChrgBr",
        "InstgAgt",
        "InstdAgt",
        "DbtrAgt",
        "CdtrAgt",
        "CdtrAcct",
    )
)
_GRP_READ: Final = tuple(
    _NAMES[MessageType.PACS_008][t]
    for t in (
        "MsgId",
        "CreDtTm",
        "NbOfTxs",
        "SttlmInf",
        "TtlIntrBkSttlmAmt",
        "InstgAgt",
        "InstdAgt",
    )
)


class Found:
    """Elements of a pacs.008 the view found while reading it, by tag (`credit_transfer`).

    `group` holds the group header's children the view reads, `transaction` the first
    transaction's; the forwarding copy of a payment to an alias is made by changing
    some of them in place (`build.forward_credit_transfer`), without looking for them
    again. They belong to the tree that was read: valid while it is.
    """

    __slots__ = ("group", "transaction")

    def __init__(self) -> None:
        self.group: Mapping[object, etree._Element] = _NONE
        self.transaction: Mapping[object, etree._Element] = _NONE


def _credit_transfer_tx(
    n: _Names, tx: etree._Element, found: Found | None = None
) -> CreditTransferTx:
    k = _kids(tx, _TX_READ)
    if found is not None and not found.transaction:
        found.transaction = k
    pmt = _kids(_need(k, n["PmtId"]))
    amount = _amount(_need(k, n["IntrBkSttlmAmt"]))
    assert amount is not None
    return CreditTransferTx(
        instr_id=_text(pmt, n["InstrId"]),
        end_to_end_id=_need_text(pmt, n["EndToEndId"]),
        tx_id=_text(pmt, n["TxId"]),
        uetr=_text(pmt, n["UETR"]),
        amount=amount,
        settlement_date=_text(k, n["IntrBkSttlmDt"]),
        charge_bearer=_need_text(k, n["ChrgBr"]),
        instructing_agent=_agent(n, k.get(n["InstgAgt"])),
        instructed_agent=_agent(n, k.get(n["InstdAgt"])),
        debtor_agent=_need_agent(n, k, "DbtrAgt"),
        creditor_agent=_need_agent(n, k, "CdtrAgt"),
        creditor_account=_account(n, k.get(n["CdtrAcct"])),
    )


def credit_transfer(doc: etree._Element, found: Found | None = None) -> CreditTransfer:
    """The typed view of a pacs.008.001.08 Document (with `found`: see `Found`)."""
    n = _NAMES[MessageType.PACS_008]
    body = _need(_kids(doc), n["FIToFICstmrCdtTrf"])
    grp_el = body[0]
    if grp_el.tag != n["GrpHdr"]:
        raise ViewError("missing mandatory element GrpHdr")
    grp = _kids(grp_el, _GRP_READ)
    if found is not None:
        found.group = grp
    txs = tuple(_credit_transfer_tx(n, tx, found) for tx in body.iterchildren(n["CdtTrfTxInf"]))
    return CreditTransfer(
        msg_id=_need_text(grp, n["MsgId"]),
        created=_need_text(grp, n["CreDtTm"]),
        nb_of_txs=int(_need_text(grp, n["NbOfTxs"])),
        settlement_method=_need_text(_kids(_need(grp, n["SttlmInf"])), n["SttlmMtd"]),
        total_amount=_amount(grp.get(n["TtlIntrBkSttlmAmt"])),
        instructing_agent=_agent(n, grp.get(n["InstgAgt"])),
        instructed_agent=_agent(n, grp.get(n["InstdAgt"])),
        transactions=txs,
    )


def status_report(doc: etree._Element) -> StatusReport:
    """The typed view of a pacs.002.001.10 Document."""
    n = _NAMES[MessageType.PACS_002]
    body_el = _need(_kids(doc), n["FIToFIPmtStsRpt"])
    body = _kids(body_el)
    grp = _kids(_need(body, n["GrpHdr"]))
    group_info = _kids(next(body_el.iterchildren(n["OrgnlGrpInfAndSts"]), None))
    txs: list[TxStatus] = []
    for tx in body_el.iterchildren(n["TxInfAndSts"]):
        k = _kids(tx)
        orig_el = k.get(n["OrgnlGrpInf"])
        orig = _kids(orig_el) if orig_el is not None else group_info
        reasons: list[str] = []
        info: list[str] = []
        for rsn in tx.iterchildren(n["StsRsnInf"]):
            r = _kids(_kids(rsn).get(n["Rsn"]))
            code = _text(r, n["Cd"]) or _text(r, n["Prtry"])
            if code:
                reasons.append(code)
            info.extend((a.text or "").strip() for a in rsn.iterchildren(n["AddtlInf"]))
        txs.append(
            TxStatus(
                original_msg_id=_text(orig, n["OrgnlMsgId"]),
                original_msg_name=_text(orig, n["OrgnlMsgNmId"]),
                original_instr_id=_text(k, n["OrgnlInstrId"]),
                original_end_to_end_id=_text(k, n["OrgnlEndToEndId"]),
                original_tx_id=_text(k, n["OrgnlTxId"]),
                original_uetr=_text(k, n["OrgnlUETR"]),
                status=_text(k, n["TxSts"]),
                reasons=tuple(reasons),
                additional_info=tuple(info),
                instructing_agent=_agent(n, k.get(n["InstgAgt"])),
                instructed_agent=_agent(n, k.get(n["InstdAgt"])),
            )
        )
    return StatusReport(
        msg_id=_need_text(grp, n["MsgId"]),
        created=_need_text(grp, n["CreDtTm"]),
        instructing_agent=_agent(n, grp.get(n["InstgAgt"])),
        instructed_agent=_agent(n, grp.get(n["InstdAgt"])),
        transactions=tuple(txs),
    )


def status_request(doc: etree._Element) -> StatusRequest:
    """The typed view of a pacs.028.001.03 Document."""
    n = _NAMES[MessageType.PACS_028]
    body_el = _need(_kids(doc), n["FIToFIPmtStsReq"])
    grp = _kids(_need(_kids(body_el), n["GrpHdr"]))
    group_info = _kids(next(body_el.iterchildren(n["OrgnlGrpInf"]), None))
    txs: list[StatusRequestTx] = []
    for tx in body_el.iterchildren(n["TxInf"]):
        k = _kids(tx)
        orig_el = k.get(n["OrgnlGrpInf"])
        orig = _kids(orig_el) if orig_el is not None else group_info
        txs.append(
            StatusRequestTx(
                status_request_id=_text(k, n["StsReqId"]),
                original_msg_id=_text(orig, n["OrgnlMsgId"]),
                original_msg_name=_text(orig, n["OrgnlMsgNmId"]),
                original_instr_id=_text(k, n["OrgnlInstrId"]),
                original_end_to_end_id=_text(k, n["OrgnlEndToEndId"]),
                original_tx_id=_text(k, n["OrgnlTxId"]),
                original_uetr=_text(k, n["OrgnlUETR"]),
                instructing_agent=_agent(n, k.get(n["InstgAgt"])),
                instructed_agent=_agent(n, k.get(n["InstdAgt"])),
            )
        )
    return StatusRequest(
        msg_id=_need_text(grp, n["MsgId"]),
        created=_need_text(grp, n["CreDtTm"]),
        instructing_agent=_agent(n, grp.get(n["InstgAgt"])),
        instructed_agent=_agent(n, grp.get(n["InstdAgt"])),
        transactions=tuple(txs),
    )


def message_reject(doc: etree._Element) -> MessageReject:
    """The typed view of an admi.002.001.01 Document."""
    n = _NAMES[MessageType.ADMI_002]
    body = _kids(_need(_kids(doc), n["admi.002.001.01"]))
    rsn = _kids(_need(body, n["Rsn"]))
    return MessageReject(
        reference=_need_text(_kids(_need(body, n["RltdRef"])), n["Ref"]),
        reason=_need_text(rsn, n["RjctgPtyRsn"]),
        rejected_at=_text(rsn, n["RjctnDtTm"]),
        error_location=_text(rsn, n["ErrLctn"]),
        description=_text(rsn, n["RsnDesc"]),
    )


def system_event(doc: etree._Element) -> SystemEvent:
    """The typed view of an admi.004.001.02 Document."""
    n = _NAMES[MessageType.ADMI_004]
    evt_el = _need(_kids(_need(_kids(doc), n["SysEvtNtfctn"])), n["EvtInf"])
    evt = _kids(evt_el)
    return SystemEvent(
        code=_need_text(evt, n["EvtCd"]),
        params=tuple((p.text or "").strip() for p in evt_el.iterchildren(n["EvtParam"])),
        description=_text(evt, n["EvtDesc"]),
        time=_text(evt, n["EvtTm"]),
    )


def _party_agent(n: _Names, k: _Kids, name: str) -> Agent:
    """The agent of a Party50Choice (`Assgnr`, `Assgne`): the scheme's parties are agents."""
    agent = _agent(n, _kids(_need(k, n[name])).get(n["Agt"]))
    if agent is None:
        raise ViewError(f"{name} names no agent (Agt) by BICFI or clearing system member id")
    return agent


def _end_user(n: _Names, creator: etree._Element | None) -> str | None:
    """The end user's id in a Party50Choice (`Cretr/Pty/Id/PrvtId|OrgId/Othr/Id`), if any."""
    ident = _kids(_kids(_kids(creator).get(n["Pty"])).get(n["Id"]))
    for kind in ("PrvtId", "OrgId"):
        found = ident.get(n[kind])
        if found is not None:
            other = next(found.iterchildren(n["Othr"]), None)
            return _text(_kids(other), n["Id"])
    return None


def identification_verification_request(doc: etree._Element) -> IdentificationVerificationRequest:
    """The typed view of an acmt.023.001.04 Document."""
    n = _NAMES[MessageType.ACMT_023]
    body_el = _need(_kids(doc), n["IdVrfctnReq"])
    asg = _kids(_need(_kids(body_el), n["Assgnmt"]))
    end_user = _end_user(n, asg.get(n["Cretr"]))
    verifications: list[IdentificationVerification] = []
    for vrf in body_el.iterchildren(n["Vrfctn"]):
        k = _kids(vrf)
        acct = _kids(_need(_kids(_need(k, n["PtyAndAcctId"])), n["Acct"]))
        proxy = _proxy(n, _need(acct, n["Prxy"]))
        assert proxy is not None
        verifications.append(
            IdentificationVerification(id=_need_text(k, n["Id"]), proxy=proxy, end_user=end_user)
        )
    return IdentificationVerificationRequest(
        msg_id=_need_text(asg, n["MsgId"]),
        created=_need_text(asg, n["CreDtTm"]),
        assigner=_party_agent(n, asg, "Assgnr"),
        assignee=_party_agent(n, asg, "Assgne"),
        end_user=end_user,
        verifications=tuple(verifications),
    )


_TRUE: Final = frozenset(("true", "1"))
"""The lexical forms of an xs:boolean true (the others, "false" and "0", are false)."""


def identification_verification_report(doc: etree._Element) -> IdentificationVerificationReport:
    """The typed view of an acmt.024.001.04 Document."""
    n = _NAMES[MessageType.ACMT_024]
    body_el = _need(_kids(doc), n["IdVrfctnRpt"])
    body = _kids(body_el, (n["Assgnmt"], n["OrgnlAssgnmt"]))
    asg = _kids(_need(body, n["Assgnmt"]))
    orig = _kids(_need(body, n["OrgnlAssgnmt"]))
    reports: list[VerificationReport] = []
    for rpt in body_el.iterchildren(n["Rpt"]):
        k = _kids(rpt)
        rsn = _kids(k.get(n["Rsn"]))
        asked = _kids(_kids(k.get(n["OrgnlPtyAndAcctId"])).get(n["Acct"]))
        found = _kids(k.get(n["UpdtdPtyAndAcctId"]))
        reports.append(
            VerificationReport(
                original_id=_need_text(k, n["OrgnlId"]),
                verified=_need_text(k, n["Vrfctn"]) in _TRUE,
                reason=_text(rsn, n["Cd"]) or _text(rsn, n["Prtry"]),
                proxy=_proxy(n, asked.get(n["Prxy"])),
                agent=_agent(n, found.get(n["Agt"])),
                name=_text(_kids(found.get(n["Pty"])), n["Nm"]),
            )
        )
    return IdentificationVerificationReport(
        msg_id=_need_text(asg, n["MsgId"]),
        created=_need_text(asg, n["CreDtTm"]),
        assigner=_party_agent(n, asg, "Assgnr"),
        assignee=_party_agent(n, asg, "Assgne"),
        original_msg_id=_need_text(orig, n["MsgId"]),
        original_created=_text(orig, n["CreDtTm"]),
        reports=tuple(reports),
    )


def _date(n: _Names, el: etree._Element | None) -> str | None:
    """The date or date-time of a DateAndDateTime2Choice, as written."""
    k = _kids(el)
    return _text(k, n["DtTm"]) or _text(k, n["Dt"])


def _report_entry(n: _Names, ntry: etree._Element) -> ReportEntry:
    k = _kids(ntry)
    amount = _amount(_need(k, n["Amt"]))
    if amount is None:
        raise ViewError("missing mandatory element Amt")
    sts = _kids(_need(k, n["Sts"]))
    tx = _kids(k.get(n["NtryDtls"])).get(n["TxDtls"])  # one per entry in the scheme
    refs = _kids(_kids(tx).get(n["Refs"]))
    return ReportEntry(
        amount=amount,
        credit=_need_text(k, n["CdtDbtInd"]) == "CRDT",
        status=_text(sts, n["Cd"]) or _need_text(sts, n["Prtry"]),
        booked=_date(n, k.get(n["BookgDt"])),
        value=_date(n, k.get(n["ValDt"])),
        reference=_text(k, n["AcctSvcrRef"]),
        kind=_text(_kids(_kids(k.get(n["BkTxCd"])).get(n["Prtry"])), n["Cd"]),
        end_to_end_id=_text(refs, n["EndToEndId"]),
        tx_id=_text(refs, n["TxId"]),
        uetr=_text(refs, n["UETR"]),
    )


def _balance(n: _Names, stmt: etree._Element, code: str) -> Amount | None:
    """The balance of type `code` (OPBD, CLBD, ...) of a statement, signed; None if absent."""
    for bal in stmt.iterchildren(n["Bal"]):
        k = _kids(bal)
        kind = _kids(_kids(k.get(n["Tp"])).get(n["CdOrPrtry"]))
        if _text(kind, n["Cd"]) != code:
            continue
        amount = _amount(k.get(n["Amt"]))
        if amount is None:
            raise ViewError(f"balance {code} has no Amt")
        if _need_text(k, n["CdtDbtInd"]) == "DBIT":
            return Amount(value=-amount.value, currency=amount.currency)
        return amount
    return None


def bank_to_customer_statement(doc: etree._Element) -> BankToCustomerStatement:
    """The typed view of a camt.053.001.08 Document."""
    n = _NAMES[MessageType.CAMT_053]
    body_el = _need(_kids(doc), n["BkToCstmrStmt"])
    grp = _kids(_need(_kids(body_el, (n["GrpHdr"],)), n["GrpHdr"]))
    statements: list[AccountStatement] = []
    for stmt in body_el.iterchildren(n["Stmt"]):
        k = _kids(stmt)
        period = _kids(k.get(n["FrToDt"]))
        acct = _kids(_need(k, n["Acct"]))
        owner = _kids(_kids(_kids(acct.get(n["Ownr"])).get(n["Id"])).get(n["OrgId"]))
        sequence = _text(k, n["ElctrncSeqNb"])
        statements.append(
            AccountStatement(
                id=_need_text(k, n["Id"]),
                sequence=int(Decimal(sequence)) if sequence is not None else None,
                created=_text(k, n["CreDtTm"]),
                period_from=_text(period, n["FrDtTm"]),
                period_to=_text(period, n["ToDtTm"]),
                account_id=_text(_kids(_kids(acct.get(n["Id"])).get(n["Othr"])), n["Id"])
                or _text(_kids(acct.get(n["Id"])), n["IBAN"]),
                owner_bic=_text(owner, n["AnyBIC"]),
                servicer=_agent(n, acct.get(n["Svcr"])),
                opening=_balance(n, stmt, "OPBD"),
                closing=_balance(n, stmt, "CLBD"),
                entries=tuple(_report_entry(n, e) for e in stmt.iterchildren(n["Ntry"])),
            )
        )
    if not statements:
        raise ViewError("missing mandatory element Stmt")
    return BankToCustomerStatement(
        msg_id=_need_text(grp, n["MsgId"]),
        created=_need_text(grp, n["CreDtTm"]),
        statements=tuple(statements),
    )


View = (
    CreditTransfer
    | StatusReport
    | StatusRequest
    | MessageReject
    | SystemEvent
    | IdentificationVerificationRequest
    | IdentificationVerificationReport
    | BankToCustomerStatement
)


def document_view(msg: Message) -> View | None:
    """The typed view of the message's Document, or None for a bare AppHdr."""
    doc = msg.document
    if doc is None:
        return None
    reader = _READERS[msg.mtype]
    return reader(doc)


_READERS: Final[dict[MessageType, Callable[[etree._Element], View]]] = {
    MessageType.PACS_008: credit_transfer,
    MessageType.PACS_002: status_report,
    MessageType.PACS_028: status_request,
    MessageType.ADMI_002: message_reject,
    MessageType.ADMI_004: system_event,
    MessageType.ACMT_023: identification_verification_request,
    MessageType.ACMT_024: identification_verification_report,
    MessageType.CAMT_053: bank_to_customer_statement,
}
