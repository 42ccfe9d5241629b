"""Bank-side message builders: what a member bank's connector sends to the switch.

Theory: a participant speaks the same wire format as the switch (RULEBOOK §2): a `BizMsg`
envelope holding a head.001.001.02 AppHdr then one Document. Two ways to produce it:

* builders (`credit_transfer`, `status_request` and the alias lookup
  `identification_verification_request` with lxml, and `status_report`, which is the
  message layer's own) return Documents that `envelope` wraps and serialises. They are
  the reference: the tests validate their output against the scheme schemas and the ISO
  base schemas.
* templates (`CreditTransferTemplate`, `StatusTemplate`) render the same business message
  by string formatting, for load generation: the parts that never change for one sender
  (agents, header parties, namespaces) are rendered once, and each message only formats
  its ids, amount and timestamps, every value XML-escaped. The tests prove that a
  template's output is the builders' output, element for element (canonical XML).

Agents are written as `switch.iso20022.views.Agent` names them: BICFI, USABA member id,
or both. Callers choose the kind; the builders write what they are given. The switch's
answer to a lookup (acmt.024) is read with `read_identification_verification_report`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any, Final
from xml.sax.saxutils import escape
from zoneinfo import ZoneInfo

from lxml import etree

from switch.iso20022 import build, views
from switch.iso20022.build import iso_datetime, status_report
from switch.iso20022.parse import UnusableMessage, parse, validate
from switch.iso20022.registry import ENVELOPE_NS, MessageType, SchemaRegistry
from switch.iso20022.views import USABA, Agent, Proxy

__all__ = [
    "BUSINESS_TZ",
    "NOT_PROVIDED",
    "SWITCH",
    "SWITCH_BICFI",
    "SWITCH_MEMBER_ID",
    "CreditTransferTemplate",
    "StatusTemplate",
    "agent_xml",
    "alias_proxy",
    "amount_text",
    "business_date",
    "credit_transfer",
    "envelope",
    "identification_verification_request",
    "read_identification_verification_report",
    "status_report",
    "status_request",
]

SWITCH_BICFI: Final = "SWCHUS33XXX"
"""The switch's BICFI: the `To` of every message a participant sends."""
SWITCH_MEMBER_ID: Final = "000000000"
"""The switch's clearing member id (a creditor agent meaning "resolve this alias")."""
SWITCH: Final = Agent(bicfi=SWITCH_BICFI)
"""The switch, named by BICFI."""
NOT_PROVIDED: Final = "NOTPROVIDED"
"""The account id written when the creditor account is given as a proxy (RULEBOOK §5)."""

BUSINESS_TZ: Final = ZoneInfo("America/New_York")
"""Where the scheme's business day rolls over (RULEBOOK §1)."""

_SUB: Final = etree.SubElement
_CENT: Final = Decimal("0.01")
_ENTITIES: Final = {"\r": "&#13;"}
"""Beyond &, < and >: what lxml escapes in text, so templates serialise as lxml does."""


def _nsmap(namespace: str) -> Any:
    """A default-namespace map (lxml's stubs do not admit the None key)."""
    return {None: namespace}


def _esc(text: str) -> str:
    return escape(text, _ENTITIES)


def amount_text(amount: Decimal) -> str:
    """An amount as written on the wire: plain notation, at least two decimals, never rounded."""
    if not isinstance(amount, Decimal) or not amount.is_finite():
        raise ValueError(f"amount must be a finite Decimal: {amount!r}")
    exponent = amount.as_tuple().exponent
    if isinstance(exponent, int) and exponent > -2:
        amount = amount.quantize(_CENT)
    return format(amount, "f")


def business_date(at: datetime) -> date:
    """The scheme business day an instant belongs to (America/New_York calendar day)."""
    if at.tzinfo is None:
        raise ValueError("timestamps on the wire must be timezone-aware")
    return at.astimezone(BUSINESS_TZ).date()


# --- lxml builders ----------------------------------------------------------------------


def _text_el(parent: etree._Element, tag: str, text: str) -> etree._Element:
    el = _SUB(parent, tag)
    el.text = text
    return el


def _agent_el(parent: etree._Element, q: str, name: str, agent: Agent) -> None:
    fin = _SUB(_SUB(parent, q + name), q + "FinInstnId")
    if agent.bicfi is not None:
        _text_el(fin, q + "BICFI", agent.bicfi)
    if agent.member_id is not None:
        mmb = _SUB(fin, q + "ClrSysMmbId")
        _text_el(_SUB(mmb, q + "ClrSysId"), q + "Cd", agent.clearing_system or USABA)
        _text_el(mmb, q + "MmbId", agent.member_id)


def _other_account(parent: etree._Element, q: str, name: str, account_id: str) -> etree._Element:
    acct = _SUB(parent, q + name)
    _text_el(_SUB(_SUB(acct, q + "Id"), q + "Othr"), q + "Id", account_id)
    return acct


def _creditor_account_id(account: str | None, proxy: Proxy | None) -> str:
    if account is not None:
        return account
    if proxy is None:
        raise ValueError("a credit transfer needs a creditor account or a creditor proxy")
    return NOT_PROVIDED


def credit_transfer(
    *,
    msg_id: str,
    created: datetime,
    uetr: str,
    end_to_end_id: str,
    tx_id: str,
    instr_id: str | None = None,
    amount: Decimal,
    currency: str = "USD",
    debtor_agent: Agent,
    creditor_agent: Agent,
    debtor_name: str,
    debtor_account: str,
    creditor_name: str,
    creditor_account: str | None,
    creditor_proxy: Proxy | None = None,
    remittance: str | None = None,
    settlement_date: date,
) -> etree._Element:
    """A one-transaction pacs.008.001.08 Document from the debtor agent.

    The instructing agent is the debtor agent and the instructed agent the creditor agent,
    written in the group header and in the transaction. With a proxy, the creditor account
    id is `NOTPROVIDED` unless one is given, and `CdtrAcct/Prxy` carries the alias.
    """
    account_id = _creditor_account_id(creditor_account, creditor_proxy)
    mtype = MessageType.PACS_008
    q = "{" + mtype.namespace + "}"
    amt = amount_text(amount)
    when = iso_datetime(created)
    day = settlement_date.isoformat()
    doc = etree.Element(q + "Document", nsmap=_nsmap(mtype.namespace))
    body = _SUB(doc, q + "FIToFICstmrCdtTrf")
    grp = _SUB(body, q + "GrpHdr")
    _text_el(grp, q + "MsgId", msg_id)
    _text_el(grp, q + "CreDtTm", when)
    _text_el(grp, q + "NbOfTxs", "1")
    _text_el(grp, q + "TtlIntrBkSttlmAmt", amt).set("Ccy", currency)
    _text_el(grp, q + "IntrBkSttlmDt", day)
    _text_el(_SUB(grp, q + "SttlmInf"), q + "SttlmMtd", "CLRG")
    _agent_el(grp, q, "InstgAgt", debtor_agent)
    _agent_el(grp, q, "InstdAgt", creditor_agent)
    tx = _SUB(body, q + "CdtTrfTxInf")
    pmt = _SUB(tx, q + "PmtId")
    if instr_id is not None:
        _text_el(pmt, q + "InstrId", instr_id)
    _text_el(pmt, q + "EndToEndId", end_to_end_id)
    _text_el(pmt, q + "TxId", tx_id)
    _text_el(pmt, q + "UETR", uetr)
    _text_el(tx, q + "IntrBkSttlmAmt", amt).set("Ccy", currency)
    _text_el(tx, q + "IntrBkSttlmDt", day)
    _text_el(tx, q + "ChrgBr", "SLEV")
    _agent_el(tx, q, "InstgAgt", debtor_agent)
    _agent_el(tx, q, "InstdAgt", creditor_agent)
    _text_el(_SUB(tx, q + "Dbtr"), q + "Nm", debtor_name)
    _other_account(tx, q, "DbtrAcct", debtor_account)
    _agent_el(tx, q, "DbtrAgt", debtor_agent)
    _agent_el(tx, q, "CdtrAgt", creditor_agent)
    _text_el(_SUB(tx, q + "Cdtr"), q + "Nm", creditor_name)
    acct = _other_account(tx, q, "CdtrAcct", account_id)
    if creditor_proxy is not None:
        prxy = _SUB(acct, q + "Prxy")
        if creditor_proxy.type_code is not None:
            _text_el(_SUB(prxy, q + "Tp"), q + "Cd", creditor_proxy.type_code)
        elif creditor_proxy.type_proprietary is not None:
            _text_el(_SUB(prxy, q + "Tp"), q + "Prtry", creditor_proxy.type_proprietary)
        _text_el(prxy, q + "Id", creditor_proxy.id)
    if remittance is not None:
        _text_el(_SUB(tx, q + "RmtInf"), q + "Ustrd", remittance)
    return doc


def status_request(
    *,
    msg_id: str,
    created: datetime,
    original_msg_id: str,
    original_uetr: str,
    original_end_to_end_id: str | None = None,
    original_tx_id: str | None = None,
    original_msg_name: str = MessageType.PACS_008.value,
    instructing_agent: Agent,
    instructed_agent: Agent,
) -> etree._Element:
    """A pacs.028.001.03 Document asking the status of one transaction."""
    mtype = MessageType.PACS_028
    q = "{" + mtype.namespace + "}"
    doc = etree.Element(q + "Document", nsmap=_nsmap(mtype.namespace))
    body = _SUB(doc, q + "FIToFIPmtStsReq")
    grp = _SUB(body, q + "GrpHdr")
    _text_el(grp, q + "MsgId", msg_id)
    _text_el(grp, q + "CreDtTm", iso_datetime(created))
    _agent_el(grp, q, "InstgAgt", instructing_agent)
    _agent_el(grp, q, "InstdAgt", instructed_agent)
    tx = _SUB(body, q + "TxInf")
    orig = _SUB(tx, q + "OrgnlGrpInf")
    _text_el(orig, q + "OrgnlMsgId", original_msg_id)
    _text_el(orig, q + "OrgnlMsgNmId", original_msg_name)
    if original_end_to_end_id is not None:
        _text_el(tx, q + "OrgnlEndToEndId", original_end_to_end_id)
    if original_tx_id is not None:
        _text_el(tx, q + "OrgnlTxId", original_tx_id)
    _text_el(tx, q + "OrgnlUETR", original_uetr)
    return doc


ALIAS_TYPE_CODES: Final = frozenset(("EMAL", "TELE"))
"""Alias types written as an ISO proxy type code (`Prxy/Tp/Cd`, RULEBOOK §5)."""
ALIAS_TYPE_PROPRIETARY: Final = frozenset(("VPA", "EVP"))
"""Alias types written as a proprietary proxy type (`Prxy/Tp/Prtry`, RULEBOOK §5)."""
END_USER_SCHEME: Final = "CUST"
"""The identification scheme of an end user named in a lookup: the bank's customer number."""


def alias_proxy(alias_type: str, alias: str) -> Proxy:
    """An alias as the scheme writes it: `Tp/Cd` EMAL or TELE, `Tp/Prtry` VPA or EVP."""
    if alias_type in ALIAS_TYPE_CODES:
        return Proxy(type_code=alias_type, type_proprietary=None, id=alias)
    if alias_type in ALIAS_TYPE_PROPRIETARY:
        return Proxy(type_code=None, type_proprietary=alias_type, id=alias)
    raise ValueError(f"unknown alias type {alias_type!r}: VPA, EMAL, TELE or EVP")


def identification_verification_request(
    *,
    msg_id: str,
    created: datetime,
    alias_type: str,
    alias: str,
    assigner: Agent,
    assignee: Agent = SWITCH,
    verification_id: str | None = None,
    end_user: str | None = None,
) -> etree._Element:
    """An acmt.023.001.04 Document asking who owns one alias (RULEBOOK §5).

    The assigner is the asking bank and the assignee the switch. The alias is the proxy
    of the account to verify; `verification_id` (default: `msg_id`) names the verification
    in the answer. `end_user`, the bank's customer who asks, is written as the message's
    creator (`Cretr/Pty/Id/PrvtId/Othr`, scheme `CUST`): the directory rate-limits lookups
    per end user as well as per bank.
    """
    proxy = alias_proxy(alias_type, alias)
    mtype = MessageType.ACMT_023
    q = "{" + mtype.namespace + "}"
    doc = etree.Element(q + "Document", nsmap=_nsmap(mtype.namespace))
    body = _SUB(doc, q + "IdVrfctnReq")
    asg = _SUB(body, q + "Assgnmt")
    _text_el(asg, q + "MsgId", msg_id)
    _text_el(asg, q + "CreDtTm", iso_datetime(created))
    if end_user is not None:
        ident = _SUB(_SUB(_SUB(_SUB(asg, q + "Cretr"), q + "Pty"), q + "Id"), q + "PrvtId")
        other = _SUB(ident, q + "Othr")
        _text_el(other, q + "Id", end_user)
        _text_el(_SUB(other, q + "SchmeNm"), q + "Cd", END_USER_SCHEME)
    _agent_el(_SUB(asg, q + "Assgnr"), q, "Agt", assigner)
    _agent_el(_SUB(asg, q + "Assgne"), q, "Agt", assignee)
    vrf = _SUB(body, q + "Vrfctn")
    _text_el(vrf, q + "Id", verification_id if verification_id is not None else msg_id)
    prxy = _SUB(_SUB(_SUB(vrf, q + "PtyAndAcctId"), q + "Acct"), q + "Prxy")
    if proxy.type_code is not None:
        _text_el(_SUB(prxy, q + "Tp"), q + "Cd", proxy.type_code)
    elif proxy.type_proprietary is not None:
        _text_el(_SUB(prxy, q + "Tp"), q + "Prtry", proxy.type_proprietary)
    _text_el(prxy, q + "Id", proxy.id)
    return doc


def read_identification_verification_report(
    data: bytes, registry: SchemaRegistry | None = None
) -> views.IdentificationVerificationReport:
    """The switch's answer to a lookup (an acmt.024 business message or bare Document), read.

    The bytes are parsed with the message layer's hardened parser and validated against
    the scheme schemas; anything that is not a valid acmt.024 raises ValueError, naming
    why. The signature is the connector's to check (`BankConnector.check`), before this.
    """
    try:
        msg = parse(data)
    except UnusableMessage as exc:
        raise ValueError(f"not a usable message: {exc}") from exc
    if msg.mtype is not MessageType.ACMT_024 or msg.document is None:
        raise ValueError(f"not an acmt.024 lookup answer: {msg.mtype.value}")
    issues = validate(msg, registry)
    if issues:
        raise ValueError(f"invalid acmt.024: {'; '.join(str(i) for i in issues)}")
    return views.identification_verification_report(msg.document)


def envelope(
    sender: Agent,
    receiver: Agent,
    mtype: MessageType,
    biz_msg_idr: str,
    document: bytes | etree._Element,
    created: datetime,
) -> bytes:
    """The serialised business message: an AppHdr from `sender` to `receiver`, then `document`.

    `document` is a Document element or one serialised without an XML declaration (what
    the message layer's builders return).
    """
    app_hdr = build.header(
        sender=sender, receiver=receiver, biz_msg_idr=biz_msg_idr, mtype=mtype, created=created
    )
    return build.business_message(app_hdr, document)


# --- templates --------------------------------------------------------------------------

_DECLARATION: Final = '<?xml version="1.0" encoding="UTF-8"?>\n'


def agent_xml(agent: Agent) -> str:
    """The `FinInstnId` element of `agent`, as text in the enclosing default namespace."""
    parts = ["<FinInstnId>"]
    if agent.bicfi is not None:
        parts.append(f"<BICFI>{_esc(agent.bicfi)}</BICFI>")
    if agent.member_id is not None:
        system = _esc(agent.clearing_system or USABA)
        parts.append(
            f"<ClrSysMmbId><ClrSysId><Cd>{system}</Cd></ClrSysId>"
            f"<MmbId>{_esc(agent.member_id)}</MmbId></ClrSysMmbId>"
        )
    parts.append("</FinInstnId>")
    return "".join(parts)


class _AgentCache:
    """Rendered `FinInstnId` fragments by agent (a sender pays few distinct agents)."""

    __slots__ = ("_found",)
    _LIMIT: Final = 4096

    def __init__(self) -> None:
        self._found: dict[Agent, str] = {}

    def __call__(self, agent: Agent) -> str:
        found = self._found.get(agent)
        if found is None:
            if len(self._found) >= self._LIMIT:
                self._found.clear()
            found = self._found[agent] = agent_xml(agent)
        return found


def _header_open(sender: Agent, receiver: Agent) -> str:
    return (
        f'{_DECLARATION}<BizMsg xmlns="{ENVELOPE_NS}">'
        f'<AppHdr xmlns="{MessageType.HEAD_001.namespace}">'
        f"<Fr><FIId>{agent_xml(sender)}</FIId></Fr><To><FIId>{agent_xml(receiver)}</FIId></To>"
        "<BizMsgIdr>"
    )


def _proxy_xml(proxy: Proxy) -> str:
    if proxy.type_code is not None:
        tp = f"<Tp><Cd>{_esc(proxy.type_code)}</Cd></Tp>"
    elif proxy.type_proprietary is not None:
        tp = f"<Tp><Prtry>{_esc(proxy.type_proprietary)}</Prtry></Tp>"
    else:
        tp = ""
    return f"<Prxy>{tp}<Id>{_esc(proxy.id)}</Id></Prxy>"


class CreditTransferTemplate:
    """Renders the pacs.008 business message of one sender by string formatting.

    The output is the `credit_transfer` Document in an `envelope` from `sender` to
    `receiver`, in canonical form identical to what the lxml builders produce.
    """

    __slots__ = (
        "_agents",
        "_ccy",
        "_debtor_account",
        "_debtor_agent",
        "_debtor_agent_xml",
        "_debtor_name",
        "_open",
    )

    def __init__(
        self,
        *,
        sender: Agent,
        receiver: Agent = SWITCH,
        debtor_agent: Agent | None = None,
        debtor_name: str,
        debtor_account: str,
        currency: str = "USD",
    ) -> None:
        if not (len(currency) == 3 and currency.isascii() and currency.isupper()):
            raise ValueError(f"currency must be an ISO 4217 code: {currency!r}")
        self._agents = _AgentCache()
        self._open = _header_open(sender, receiver)
        self._debtor_agent = debtor_agent or sender
        self._debtor_agent_xml = self._agents(self._debtor_agent)
        self._debtor_name = _esc(debtor_name)
        self._debtor_account = _esc(debtor_account)
        self._ccy = f'Ccy="{currency}"'

    def render(
        self,
        msg_id: str,
        uetr: str,
        end_to_end_id: str,
        tx_id: str,
        amount: Decimal,
        creditor_agent: Agent,
        creditor_account: str | None,
        *,
        creditor_name: str,
        creditor_proxy: Proxy | None = None,
        remittance: str | None = None,
        instr_id: str | None = None,
        created: datetime | None = None,
        settlement_date: date | None = None,
        debtor_agent: Agent | None = None,
        debtor_name: str | None = None,
        debtor_account: str | None = None,
        biz_msg_idr: str | None = None,
    ) -> bytes:
        """The business message; `created` defaults to now, `biz_msg_idr` to `msg_id`."""
        if created is None:
            created = datetime.now(UTC)
        if settlement_date is None:
            settlement_date = business_date(created)
        account_id = _esc(_creditor_account_id(creditor_account, creditor_proxy))
        when = iso_datetime(created)
        day = settlement_date.isoformat()
        amt = amount_text(amount)
        ccy = self._ccy
        msg = _esc(msg_id)
        biz = msg if biz_msg_idr is None else _esc(biz_msg_idr)
        dbtr_agt = self._debtor_agent_xml if debtor_agent is None else self._agents(debtor_agent)
        cdtr_agt = self._agents(creditor_agent)
        dbtr_nm = self._debtor_name if debtor_name is None else _esc(debtor_name)
        dbtr_acct = self._debtor_account if debtor_account is None else _esc(debtor_account)
        instr = "" if instr_id is None else f"<InstrId>{_esc(instr_id)}</InstrId>"
        prxy = "" if creditor_proxy is None else _proxy_xml(creditor_proxy)
        rmt = "" if remittance is None else f"<RmtInf><Ustrd>{_esc(remittance)}</Ustrd></RmtInf>"
        text = (
            f"{self._open}{biz}</BizMsgIdr><MsgDefIdr>pacs.008.001.08</MsgDefIdr>"
            f'<CreDt>{when}</CreDt></AppHdr><Document xmlns="{_PACS_008_NS}">'
            f"<FIToFICstmrCdtTrf><GrpHdr><MsgId>{msg}</MsgId><CreDtTm>{when}</CreDtTm>"
            f"<NbOfTxs>1</NbOfTxs><TtlIntrBkSttlmAmt {ccy}>{amt}</TtlIntrBkSttlmAmt>"
            f"<IntrBkSttlmDt>{day}</IntrBkSttlmDt><SttlmInf><SttlmMtd>CLRG</SttlmMtd></SttlmInf>"
            f"<InstgAgt>{dbtr_agt}</InstgAgt><InstdAgt>{cdtr_agt}</InstdAgt></GrpHdr>"
            f"<CdtTrfTxInf><PmtId>{instr}<EndToEndId>{_esc(end_to_end_id)}</EndToEndId>"
            f"<TxId>{_esc(tx_id)}</TxId><UETR>{_esc(uetr)}</UETR></PmtId>"
            f"<IntrBkSttlmAmt {ccy}>{amt}</IntrBkSttlmAmt><IntrBkSttlmDt>{day}</IntrBkSttlmDt>"
            f"<ChrgBr>SLEV</ChrgBr><InstgAgt>{dbtr_agt}</InstgAgt><InstdAgt>{cdtr_agt}</InstdAgt>"
            f"<Dbtr><Nm>{dbtr_nm}</Nm></Dbtr>"
            f"<DbtrAcct><Id><Othr><Id>{dbtr_acct}</Id></Othr></Id></DbtrAcct>"
            f"<DbtrAgt>{dbtr_agt}</DbtrAgt><CdtrAgt>{cdtr_agt}</CdtrAgt>"
            f"<Cdtr><Nm>{_esc(creditor_name)}</Nm></Cdtr>"
            f"<CdtrAcct><Id><Othr><Id>{account_id}</Id></Othr></Id>{prxy}</CdtrAcct>"
            f"{rmt}</CdtTrfTxInf></FIToFICstmrCdtTrf></Document></BizMsg>"
        )
        return text.encode()


_PACS_008_NS: Final = MessageType.PACS_008.namespace
_PACS_002_NS: Final = MessageType.PACS_002.namespace


class StatusTemplate:
    """Renders a one-transaction pacs.002 business message by string formatting.

    The output is `status_report` (instructing agent = the sender, instructed agent = the
    receiver, unless given) in an `envelope` from `sender` to `receiver`, in canonical
    form identical to what the lxml builders produce.
    """

    __slots__ = ("_agents_xml", "_open")

    def __init__(
        self,
        *,
        sender: Agent,
        receiver: Agent = SWITCH,
        instructing_agent: Agent | None = None,
        instructed_agent: Agent | None = None,
    ) -> None:
        self._open = _header_open(sender, receiver)
        instg = agent_xml(instructing_agent or sender)
        instd = agent_xml(instructed_agent or receiver)
        self._agents_xml = f"<InstgAgt>{instg}</InstgAgt><InstdAgt>{instd}</InstdAgt>"

    def render(
        self,
        msg_id: str,
        original_msg_id: str,
        original_uetr: str | None,
        status: str,
        *,
        original_end_to_end_id: str | None = None,
        original_tx_id: str | None = None,
        reason: str | None = None,
        original_msg_name: str = MessageType.PACS_008.value,
        created: datetime | None = None,
        biz_msg_idr: str | None = None,
    ) -> bytes:
        """The business message; `created` defaults to now, `biz_msg_idr` to `msg_id`."""
        when = iso_datetime(datetime.now(UTC) if created is None else created)
        msg = _esc(msg_id)
        biz = msg if biz_msg_idr is None else _esc(biz_msg_idr)
        e2e = (
            ""
            if original_end_to_end_id is None
            else f"<OrgnlEndToEndId>{_esc(original_end_to_end_id)}</OrgnlEndToEndId>"
        )
        txid = "" if original_tx_id is None else f"<OrgnlTxId>{_esc(original_tx_id)}</OrgnlTxId>"
        uetr = "" if original_uetr is None else f"<OrgnlUETR>{_esc(original_uetr)}</OrgnlUETR>"
        rsn = "" if reason is None else f"<StsRsnInf><Rsn><Cd>{_esc(reason)}</Cd></Rsn></StsRsnInf>"
        text = (
            f"{self._open}{biz}</BizMsgIdr><MsgDefIdr>pacs.002.001.10</MsgDefIdr>"
            f'<CreDt>{when}</CreDt></AppHdr><Document xmlns="{_PACS_002_NS}">'
            f"<FIToFIPmtStsRpt><GrpHdr><MsgId>{msg}</MsgId><CreDtTm>{when}</CreDtTm></GrpHdr>"
            f"<TxInfAndSts><OrgnlGrpInf><OrgnlMsgId>{_esc(original_msg_id)}</OrgnlMsgId>"
            f"<OrgnlMsgNmId>{_esc(original_msg_name)}</OrgnlMsgNmId></OrgnlGrpInf>"
            f"{e2e}{txid}{uetr}"
            f"<TxSts>{_esc(status)}</TxSts>{rsn}{self._agents_xml}"
            "</TxInfAndSts></FIToFIPmtStsRpt></Document></BizMsg>"
        )
        return text.encode()
