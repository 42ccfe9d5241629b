"""Builders: typed values in, scheme-valid ISO 20022 XML out.

Theory: every message the switch emits is built here and nowhere else, so conformance is
proved in one place (the tests validate each builder's output against both the scheme and
the ISO base schemas). Builders return lxml elements; `business_message` wraps an AppHdr
and a Document into the scheme's `BizMsg` envelope and serialises it. Agents are written
"in kind": by BICFI, by USABA member id, or both, as the participant named them.
"""

from __future__ import annotations

import copy
from datetime import UTC, datetime
from typing import Any, Final

from lxml import etree

from switch.iso20022.registry import ENVELOPE_NS, MessageType
from switch.iso20022.views import USABA, Agent

_SUB: Final = etree.SubElement


def _nsmap(namespace: str) -> Any:
    """A default-namespace map (lxml's stubs do not admit the None key)."""
    return {None: namespace}


def iso_datetime(at: datetime) -> str:
    """An ISODateTime in UTC with milliseconds, e.g. `2026-11-21T14:03:11.123Z`."""
    if at.tzinfo is None:
        raise ValueError("timestamps on the wire must be timezone-aware")
    utc = at.astimezone(UTC)
    return utc.strftime("%Y-%m-%dT%H:%M:%S.") + f"{utc.microsecond // 1000:03d}Z"


def _q(mtype: MessageType) -> str:
    return "{" + mtype.namespace + "}"


def _text_el(parent: etree._Element, tag: str, text: str) -> etree._Element:
    el = _SUB(parent, tag)
    el.text = text
    return el


def _fin_instn_id(parent: etree._Element, q: str, agent: Agent) -> None:
    fin = _SUB(parent, q + "FinInstnId")
    if agent.bicfi is not None:
        _text_el(fin, q + "BICFI", agent.bicfi)
    if agent.member_id is not None:
        mmb = _SUB(fin, q + "ClrSysMmbId")
        _text_el(_SUB(mmb, q + "ClrSysId"), q + "Cd", agent.clearing_system or USABA)
        _text_el(mmb, q + "MmbId", agent.member_id)


def _agent_el(parent: etree._Element, q: str, name: str, agent: Agent | None) -> None:
    if agent is not None:
        _fin_instn_id(_SUB(parent, q + name), q, agent)


def header(
    *,
    sender: Agent,
    receiver: Agent,
    biz_msg_idr: str,
    mtype: MessageType,
    created: datetime,
) -> etree._Element:
    """A head.001.001.02 AppHdr from `sender` to `receiver` for a message of type `mtype`."""
    q = _q(MessageType.HEAD_001)
    root = etree.Element(q + "AppHdr", nsmap=_nsmap(MessageType.HEAD_001.namespace))
    _fin_instn_id(_SUB(_SUB(root, q + "Fr"), q + "FIId"), q, sender)
    _fin_instn_id(_SUB(_SUB(root, q + "To"), q + "FIId"), q, receiver)
    _text_el(root, q + "BizMsgIdr", biz_msg_idr)
    _text_el(root, q + "MsgDefIdr", mtype.value)
    _text_el(root, q + "CreDt", iso_datetime(created))
    return root


def status_report(
    *,
    msg_id: str,
    created: datetime,
    status: str,
    original_msg_id: str,
    original_msg_name: str = MessageType.PACS_008.value,
    original_end_to_end_id: str | None = None,
    original_tx_id: str | None = None,
    original_instr_id: str | None = None,
    original_uetr: str | None = None,
    reason: str | None = None,
    additional_info: str | None = None,
    accepted_at: datetime | None = None,
    clearing_ref: str | None = None,
    instructing_agent: Agent | None = None,
    instructed_agent: Agent | None = None,
) -> etree._Element:
    """A pacs.002.001.10 with one transaction status (and its reason, when rejected)."""
    q = _q(MessageType.PACS_002)
    doc = etree.Element(q + "Document", nsmap=_nsmap(MessageType.PACS_002.namespace))
    body = _SUB(doc, q + "FIToFIPmtStsRpt")
    grp = _SUB(body, q + "GrpHdr")
    _text_el(grp, q + "MsgId", msg_id)
    _text_el(grp, q + "CreDtTm", iso_datetime(created))
    tx = _SUB(body, q + "TxInfAndSts")
    orig = _SUB(tx, q + "OrgnlGrpInf")
    _text_el(orig, q + "OrgnlMsgId", original_msg_id)
    _text_el(orig, q + "OrgnlMsgNmId", original_msg_name)
    if original_instr_id is not None:
        _text_el(tx, q + "OrgnlInstrId", original_instr_id)
    if original_end_to_end_id is not None:
        _text_el(tx, q + "OrgnlEndToEndId", original_end_to_end_id)
    if original_tx_id is not None:
        _text_el(tx, q + "OrgnlTxId", original_tx_id)
    if original_uetr is not None:
        _text_el(tx, q + "OrgnlUETR", original_uetr)
    _text_el(tx, q + "TxSts", status)
    if reason is not None or additional_info is not None:
        rsn_inf = _SUB(tx, q + "StsRsnInf")
        if reason is not None:
            _text_el(_SUB(rsn_inf, q + "Rsn"), q + "Cd", reason)
        if additional_info is not None:
            _text_el(rsn_inf, q + "AddtlInf", additional_info[:105])
    if accepted_at is not None:
        _text_el(tx, q + "AccptncDtTm", iso_datetime(accepted_at))
    if clearing_ref is not None:
        _text_el(tx, q + "ClrSysRef", clearing_ref)
    _agent_el(tx, q, "InstgAgt", instructing_agent)
    _agent_el(tx, q, "InstdAgt", instructed_agent)
    return doc


def forward_credit_transfer(
    document: etree._Element,
    *,
    creditor_agent: Agent | None = None,
    creditor_account_id: str | None = None,
    instructed_agent: Agent | None = None,
) -> etree._Element:
    """The forwarding copy of a one-transaction pacs.008 Document, agents and account updated.

    The copy keeps every element the debtor agent sent. When the switch resolved an alias
    it names the real creditor agent (in `CdtrAgt` and `InstdAgt`) and the real account
    (`CdtrAcct/Id/Othr/Id`); the alias itself stays in `CdtrAcct/Prxy`.
    """
    q = _q(MessageType.PACS_008)
    doc = copy.deepcopy(document)
    tx = doc.find(f"{q}FIToFICstmrCdtTrf/{q}CdtTrfTxInf")
    if tx is None:
        raise ValueError("pacs.008 has no CdtTrfTxInf")
    if creditor_agent is not None:
        _replace_agent(tx, q, "CdtrAgt", creditor_agent)
    if instructed_agent is not None:
        _replace_agent(tx, q, "InstdAgt", instructed_agent)
    if creditor_account_id is not None:
        other_id = tx.find(f"{q}CdtrAcct/{q}Id/{q}Othr/{q}Id")
        if other_id is None:
            raise ValueError("pacs.008 has no CdtrAcct/Id/Othr/Id to fill in")
        other_id.text = creditor_account_id
    return doc


def _replace_agent(tx: etree._Element, q: str, name: str, agent: Agent) -> None:
    old = tx.find(q + name)
    if old is None:
        raise ValueError(f"pacs.008 has no {name} to replace")
    new = etree.Element(q + name)
    _fin_instn_id(new, q, agent)
    old.getparent().replace(old, new)  # type: ignore[union-attr]


def message_reject(
    *,
    reference: str,
    reason: str,
    rejected_at: datetime,
    description: str,
    error_location: str | None = None,
) -> etree._Element:
    """An admi.002.001.01 rejecting a message that could not be used at all."""
    q = _q(MessageType.ADMI_002)
    doc = etree.Element(q + "Document", nsmap=_nsmap(MessageType.ADMI_002.namespace))
    body = _SUB(doc, q + "admi.002.001.01")
    _text_el(_SUB(body, q + "RltdRef"), q + "Ref", reference[:35] or "UNKNOWN")
    rsn = _SUB(body, q + "Rsn")
    _text_el(rsn, q + "RjctgPtyRsn", reason[:35])
    _text_el(rsn, q + "RjctnDtTm", iso_datetime(rejected_at))
    if error_location is not None:
        _text_el(rsn, q + "ErrLctn", error_location[:350])
    _text_el(rsn, q + "RsnDesc", description[:350])
    return doc


def system_event(
    *,
    code: str,
    time: datetime,
    params: tuple[str, ...] = (),
    description: str | None = None,
) -> etree._Element:
    """An admi.004.001.02 system event notification (sign-on/off, suspend, rollover)."""
    q = _q(MessageType.ADMI_004)
    doc = etree.Element(q + "Document", nsmap=_nsmap(MessageType.ADMI_004.namespace))
    evt = _SUB(_SUB(doc, q + "SysEvtNtfctn"), q + "EvtInf")
    _text_el(evt, q + "EvtCd", code)
    for p in params:
        _text_el(evt, q + "EvtParam", p[:35])
    if description is not None:
        _text_el(evt, q + "EvtDesc", description[:1000])
    _text_el(evt, q + "EvtTm", iso_datetime(time))
    return doc


_BIZMSG: Final = "{" + ENVELOPE_NS + "}BizMsg"


def business_message(app_hdr: etree._Element, document: etree._Element) -> bytes:
    """The scheme's transport message: a `BizMsg` envelope with AppHdr then Document."""
    root = etree.Element(_BIZMSG, nsmap=_nsmap(ENVELOPE_NS))
    root.append(app_hdr)
    root.append(document)
    return etree.tostring(root, xml_declaration=True, encoding="UTF-8")


def serialise(element: etree._Element) -> bytes:
    """One element (a bare Document or AppHdr) as UTF-8 bytes with an XML declaration."""
    return etree.tostring(element, xml_declaration=True, encoding="UTF-8")
