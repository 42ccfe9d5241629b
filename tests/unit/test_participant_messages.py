"""Bank-side builders and templates: valid against scheme and base schemas, templates == lxml."""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from lxml import etree

from participants import messages
from participants.messages import (
    SWITCH,
    CreditTransferTemplate,
    StatusTemplate,
    amount_text,
    business_date,
    credit_transfer,
    envelope,
    status_report,
    status_request,
)
from switch.iso20022 import build, parse, validate, views
from switch.iso20022.registry import MessageType, SchemaRegistry
from switch.iso20022.views import USABA, Agent, Proxy

BASE_DIR = Path(__file__).resolve().parents[3] / "shared" / "iso20022-base"
BASE = SchemaRegistry(BASE_DIR)

NOW = datetime(2026, 11, 21, 14, 3, 11, 123456, tzinfo=UTC)
UETR = "a41c7e90-2b6d-4f13-9e58-c07d3b1fa62e"
BANK_A = Agent(bicfi="BNKAUS33XXX")
BANK_B = Agent(bicfi="BNKBUS44XXX")
BANK_A_ABA = Agent(member_id="011000015", clearing_system=USABA)
BANK_B_ABA = Agent(member_id="021000021", clearing_system=USABA)
BANK_B_BOTH = Agent(bicfi="BNKBUS44XXX", member_id="021000021", clearing_system=USABA)
SWITCH_ABA = Agent(member_id="000000000", clearing_system=USABA)


def _valid_everywhere(raw: bytes) -> views.View | None:
    """Parse `raw`, assert it is valid against the scheme and the base schemas, view it."""
    msg = parse(raw)
    assert validate(msg) == []
    assert validate(msg, BASE) == []
    return views.document_view(msg)


def _c14n(raw: bytes) -> bytes:
    return etree.tostring(etree.fromstring(raw), method="c14n")


def _transfer(**over: Any) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "msg_id": "BNKA000000000001a1b2c3d4",
        "uetr": UETR,
        "end_to_end_id": "PO-77815-3",
        "tx_id": "TBNKA000000000001a1b2c3d4",
        "amount": Decimal("4780.25"),
        "creditor_agent": BANK_B,
        "creditor_account": "987654321000",
        "creditor_name": "Bob Jones Plumbing LLC",
    }
    fields.update(over)
    return fields


def _built_transfer(
    debtor_agent: Agent = BANK_A, sender: Agent = BANK_A, **over: Any
) -> tuple[etree._Element, bytes]:
    fields = _transfer(**over)
    doc = credit_transfer(
        created=NOW,
        debtor_agent=debtor_agent,
        debtor_name="Alice Smith",
        debtor_account="000123456789",
        settlement_date=business_date(NOW),
        **fields,
    )
    return doc, envelope(sender, SWITCH, MessageType.PACS_008, fields["msg_id"], doc, NOW)


def test_credit_transfer_is_valid_and_reads_back() -> None:
    doc, raw = _built_transfer(remittance="Invoice PO-77815-3", instr_id="INS-1")
    ct = _valid_everywhere(raw)
    assert isinstance(ct, views.CreditTransfer)
    assert ct.msg_id == "BNKA000000000001a1b2c3d4"
    assert ct.created == "2026-11-21T14:03:11.123Z"
    assert ct.nb_of_txs == 1
    assert ct.settlement_method == "CLRG"
    assert ct.total_amount == views.Amount(value=Decimal("4780.25"), currency="USD")
    assert ct.instructing_agent == BANK_A
    assert ct.instructed_agent == BANK_B
    (tx,) = ct.transactions
    assert (tx.instr_id, tx.end_to_end_id, tx.tx_id, tx.uetr) == (
        "INS-1",
        "PO-77815-3",
        "TBNKA000000000001a1b2c3d4",
        UETR,
    )
    assert tx.amount == views.Amount(value=Decimal("4780.25"), currency="USD")
    assert tx.settlement_date == "2026-11-21"
    assert tx.charge_bearer == "SLEV"
    assert (tx.debtor_agent, tx.creditor_agent) == (BANK_A, BANK_B)
    assert (tx.instructing_agent, tx.instructed_agent) == (BANK_A, BANK_B)
    q = "{" + MessageType.PACS_008.namespace + "}"
    xtx = f"{q}FIToFICstmrCdtTrf/{q}CdtTrfTxInf/{q}"
    assert doc.findtext(f"{xtx}Dbtr/{q}Nm") == "Alice Smith"
    assert doc.findtext(f"{xtx}DbtrAcct/{q}Id/{q}Othr/{q}Id") == "000123456789"
    assert doc.findtext(f"{xtx}Cdtr/{q}Nm") == "Bob Jones Plumbing LLC"
    assert tx.creditor_account == views.Account(other_id="987654321000")


def test_credit_transfer_follows_the_xsd_sequence() -> None:
    doc, _ = _built_transfer(remittance="x", instr_id="I")
    q = "{" + MessageType.PACS_008.namespace + "}"

    def names(el: etree._Element | None) -> list[str]:
        assert el is not None
        return [etree.QName(c).localname for c in el]

    body = doc.find(q + "FIToFICstmrCdtTrf")
    assert names(body) == ["GrpHdr", "CdtTrfTxInf"]
    assert names(doc.find(f"{q}FIToFICstmrCdtTrf/{q}GrpHdr")) == [
        "MsgId",
        "CreDtTm",
        "NbOfTxs",
        "TtlIntrBkSttlmAmt",
        "IntrBkSttlmDt",
        "SttlmInf",
        "InstgAgt",
        "InstdAgt",
    ]
    assert names(doc.find(f"{q}FIToFICstmrCdtTrf/{q}CdtTrfTxInf")) == [
        "PmtId",
        "IntrBkSttlmAmt",
        "IntrBkSttlmDt",
        "ChrgBr",
        "InstgAgt",
        "InstdAgt",
        "Dbtr",
        "DbtrAcct",
        "DbtrAgt",
        "CdtrAgt",
        "Cdtr",
        "CdtrAcct",
        "RmtInf",
    ]
    assert names(doc.find(f"{q}FIToFICstmrCdtTrf/{q}CdtTrfTxInf/{q}PmtId")) == [
        "InstrId",
        "EndToEndId",
        "TxId",
        "UETR",
    ]


def test_credit_transfer_by_member_id_to_an_alias() -> None:
    alias = Proxy(type_code=None, type_proprietary="VPA", id="bob@bankb")
    _, raw = _built_transfer(
        debtor_agent=BANK_A_ABA,
        creditor_agent=SWITCH_ABA,
        creditor_account=None,
        creditor_proxy=alias,
    )
    ct = _valid_everywhere(raw)
    assert isinstance(ct, views.CreditTransfer)
    (tx,) = ct.transactions
    assert tx.debtor_agent == BANK_A_ABA
    assert tx.creditor_agent == SWITCH_ABA
    assert tx.creditor_account == views.Account(other_id="NOTPROVIDED", proxy=alias)


def test_credit_transfer_with_proxy_type_code_and_both_identifiers() -> None:
    alias = Proxy(type_code="EMAL", type_proprietary=None, id="bob@example.com")
    _, raw = _built_transfer(creditor_agent=BANK_B_BOTH, creditor_proxy=alias)
    ct = _valid_everywhere(raw)
    assert isinstance(ct, views.CreditTransfer)
    (tx,) = ct.transactions
    assert tx.creditor_agent == BANK_B_BOTH
    assert tx.creditor_account == views.Account(other_id="987654321000", proxy=alias)


def test_credit_transfer_needs_an_account_or_a_proxy() -> None:
    with pytest.raises(ValueError, match="creditor account or a creditor proxy"):
        _built_transfer(creditor_account=None)
    template = CreditTransferTemplate(sender=BANK_A, debtor_name="A", debtor_account="1")
    fields = _transfer(creditor_account=None)
    with pytest.raises(ValueError, match="creditor account or a creditor proxy"):
        template.render(**fields)


def test_status_report_is_the_message_layer_builder() -> None:
    assert status_report is build.status_report


def test_status_request_is_valid_and_reads_back() -> None:
    doc = status_request(
        msg_id="BNKA000000000002a1b2c3d4",
        created=NOW,
        original_msg_id="BNKA000000000001a1b2c3d4",
        original_uetr=UETR,
        original_end_to_end_id="PO-77815-3",
        original_tx_id="T1",
        instructing_agent=BANK_A,
        instructed_agent=SWITCH,
    )
    raw = envelope(BANK_A, SWITCH, MessageType.PACS_028, "BNKA000000000002a1b2c3d4", doc, NOW)
    req = _valid_everywhere(raw)
    assert isinstance(req, views.StatusRequest)
    assert req.msg_id == "BNKA000000000002a1b2c3d4"
    assert (req.instructing_agent, req.instructed_agent) == (BANK_A, SWITCH)
    (tx,) = req.transactions
    assert tx.original_msg_id == "BNKA000000000001a1b2c3d4"
    assert tx.original_msg_name == "pacs.008.001.08"
    assert (tx.original_end_to_end_id, tx.original_tx_id, tx.original_uetr) == (
        "PO-77815-3",
        "T1",
        UETR,
    )


def test_status_request_minimal_is_valid() -> None:
    doc = status_request(
        msg_id="M2",
        created=NOW,
        original_msg_id="M1",
        original_uetr=UETR,
        instructing_agent=BANK_A_ABA,
        instructed_agent=SWITCH_ABA,
    )
    _valid_everywhere(envelope(BANK_A, SWITCH, MessageType.PACS_028, "M2", doc, NOW))


def test_envelope_header_names_sender_receiver_and_type() -> None:
    _, raw = _built_transfer()
    msg = parse(raw)
    assert msg.header is not None
    hdr = views.header(msg.header)
    assert (hdr.from_bicfi, hdr.to_bicfi) == ("BNKAUS33XXX", "SWCHUS33XXX")
    assert hdr.biz_msg_idr == "BNKA000000000001a1b2c3d4"
    assert hdr.msg_def_idr == "pacs.008.001.08"
    assert hdr.created == "2026-11-21T14:03:11.123Z"


TEMPLATE_CASES: dict[str, dict[str, Any]] = {
    "bicfi": {},
    "usaba": {"creditor_agent": BANK_B_ABA, "debtor_agent": BANK_A_ABA},
    "both-identifiers": {"creditor_agent": BANK_B_BOTH},
    "proxy-prtry": {
        "creditor_agent": SWITCH_ABA,
        "creditor_account": None,
        "creditor_proxy": Proxy(type_code=None, type_proprietary="VPA", id="bob@bankb"),
    },
    "proxy-cd": {
        "creditor_account": "987654321000",
        "creditor_proxy": Proxy(type_code="TELE", type_proprietary=None, id="+12125550100"),
    },
    "remittance-and-instr-id": {"remittance": "Invoice 7, «kitchen»", "instr_id": "INS-7"},
    "escaping": {
        "end_to_end_id": "A&B<C>'D\"",
        "creditor_name": 'Smith & Sons <Ltd> "quoted"',
        "remittance": "line one\r\nline two & more",
    },
    "whole-amount": {"amount": Decimal("10")},
    "exponent-amount": {"amount": Decimal("1E+3")},
}


@pytest.mark.parametrize("case", TEMPLATE_CASES)
def test_credit_transfer_template_equals_the_builder(case: str) -> None:
    over = dict(TEMPLATE_CASES[case])
    debtor_agent: Agent = over.pop("debtor_agent", BANK_A)
    _, expected = _built_transfer(debtor_agent=debtor_agent, **over)
    template = CreditTransferTemplate(
        sender=BANK_A,
        debtor_agent=debtor_agent,
        debtor_name="Alice Smith",
        debtor_account="000123456789",
    )
    fields = _transfer(**over)
    rendered = template.render(
        fields.pop("msg_id"),
        fields.pop("uetr"),
        fields.pop("end_to_end_id"),
        fields.pop("tx_id"),
        fields.pop("amount"),
        fields.pop("creditor_agent"),
        fields.pop("creditor_account"),
        created=NOW,
        **fields,
    )
    assert _c14n(rendered) == _c14n(expected)
    _valid_everywhere(rendered)


def test_credit_transfer_template_overrides_debtor_and_ids() -> None:
    template = CreditTransferTemplate(sender=BANK_A, debtor_name="Alice", debtor_account="1")
    rendered = template.render(
        **_transfer(),
        created=NOW,
        settlement_date=date(2026, 11, 23),
        debtor_agent=BANK_A_ABA,
        debtor_name="Carol",
        debtor_account="2",
        biz_msg_idr="BIZ-1",
    )
    fields = _transfer()
    doc = credit_transfer(
        created=NOW,
        debtor_agent=BANK_A_ABA,
        debtor_name="Carol",
        debtor_account="2",
        settlement_date=date(2026, 11, 23),
        **fields,
    )
    expected = envelope(BANK_A, SWITCH, MessageType.PACS_008, "BIZ-1", doc, NOW)
    assert _c14n(rendered) == _c14n(expected)
    _valid_everywhere(rendered)


def test_credit_transfer_template_defaults_to_now() -> None:
    template = CreditTransferTemplate(sender=BANK_A, debtor_name="Alice", debtor_account="1")
    before = datetime.now(UTC)
    ct = _valid_everywhere(template.render(**_transfer()))
    assert isinstance(ct, views.CreditTransfer)
    created = datetime.fromisoformat(ct.created.replace("Z", "+00:00"))
    assert abs((created - before).total_seconds()) < 5
    assert ct.transactions[0].settlement_date == business_date(created).isoformat()


def test_template_refuses_a_bad_currency() -> None:
    with pytest.raises(ValueError, match="ISO 4217"):
        CreditTransferTemplate(sender=BANK_A, debtor_name="A", debtor_account="1", currency="usd")


STATUS_CASES: dict[str, dict[str, Any]] = {
    "accept": {"status": "ACSP"},
    "reject": {"status": "RJCT", "reason": "AC04"},
    "ids": {
        "status": "ACSP",
        "original_end_to_end_id": "PO-77815-3",
        "original_tx_id": "T&1",
    },
    "no-uetr": {"status": "RJCT", "reason": "FF01", "original_uetr": None},
}


@pytest.mark.parametrize("kind", ["bicfi", "usaba"])
@pytest.mark.parametrize("case", STATUS_CASES)
def test_status_template_equals_the_builder(case: str, kind: str) -> None:
    over = dict(STATUS_CASES[case])
    own, switch = (BANK_B, SWITCH) if kind == "bicfi" else (BANK_B_ABA, SWITCH_ABA)
    fields: dict[str, Any] = {"original_uetr": UETR, **over}
    doc = build.status_report(
        msg_id="BNKB000000000001ffffffff",
        created=NOW,
        original_msg_id="BNKA000000000001a1b2c3d4",
        instructing_agent=own,
        instructed_agent=switch,
        **fields,
    )
    expected = envelope(BANK_B, SWITCH, MessageType.PACS_002, "BNKB000000000001ffffffff", doc, NOW)
    template = StatusTemplate(
        sender=BANK_B, receiver=SWITCH, instructing_agent=own, instructed_agent=switch
    )
    rendered = template.render(
        "BNKB000000000001ffffffff",
        "BNKA000000000001a1b2c3d4",
        fields.pop("original_uetr"),
        fields.pop("status"),
        created=NOW,
        **fields,
    )
    assert _c14n(rendered) == _c14n(expected)
    report = _valid_everywhere(rendered)
    assert isinstance(report, views.StatusReport)
    (tx,) = report.transactions
    assert tx.status == over["status"]
    assert tx.reasons == ((over["reason"],) if "reason" in over else ())
    assert (tx.instructing_agent, tx.instructed_agent) == (own, switch)


def test_status_template_agents_default_to_header_parties() -> None:
    template = StatusTemplate(sender=BANK_B)
    report = _valid_everywhere(template.render("M", "O", UETR, "ACSP"))
    assert isinstance(report, views.StatusReport)
    (tx,) = report.transactions
    assert (tx.instructing_agent, tx.instructed_agent) == (BANK_B, SWITCH)


@pytest.mark.parametrize(
    ("amount", "text"),
    [
        (Decimal("10"), "10.00"),
        (Decimal("10.5"), "10.50"),
        (Decimal("0.01"), "0.01"),
        (Decimal("1E+3"), "1000.00"),
        (Decimal("12.345"), "12.345"),
        (Decimal("999999999999.99"), "999999999999.99"),
    ],
)
def test_amount_text(amount: Decimal, text: str) -> None:
    assert amount_text(amount) == text


@pytest.mark.parametrize("bad", [Decimal("NaN"), Decimal("Infinity"), 10.5])
def test_amount_text_refuses_non_decimals(bad: Any) -> None:
    with pytest.raises(ValueError, match="finite Decimal"):
        amount_text(bad)


def test_business_date_is_new_york_calendar_day() -> None:
    assert business_date(datetime(2026, 11, 22, 3, 0, tzinfo=UTC)) == date(2026, 11, 21)
    assert business_date(datetime(2026, 11, 22, 6, 0, tzinfo=UTC)) == date(2026, 11, 22)
    with pytest.raises(ValueError, match="timezone-aware"):
        business_date(datetime(2026, 11, 22, 6, 0))


def test_module_exports() -> None:
    for name in messages.__all__:
        assert hasattr(messages, name)
