"""The message layer: hardened parsing, validation, typed views and builders."""

from __future__ import annotations

import json
import pickle
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path

import pytest
from lxml import etree

from switch.cli import main
from switch.iso20022 import (
    REASONS,
    SWITCH_REASONS,
    BadEnvelope,
    EmptyMessage,
    ForbiddenDTD,
    MessageTooDeep,
    MessageTooLarge,
    MessageType,
    NotWellFormed,
    ParseLimits,
    UnknownNamespace,
    build,
    parse,
    reason,
    validate,
    views,
)
from tests.oracle import base_errors

REPO = Path(__file__).resolve().parents[2]
EXAMPLES = REPO / "examples"
NOW = datetime(2026, 11, 21, 14, 3, 11, 123456, tzinfo=UTC)
SWITCH = views.Agent(bicfi="SWCHUS33XXX")
BANK_A = views.Agent(bicfi="BNKAUS33XXX")
BANK_B_ABA = views.Agent(member_id="011000015", clearing_system="USABA")

PACS002_NS = MessageType.PACS_002.namespace
SMALL_PACS002 = f"""<?xml version="1.0"?>
<Document xmlns="{PACS002_NS}">
  <FIToFIPmtStsRpt>
    <GrpHdr><MsgId>M1</MsgId><CreDtTm>2026-11-21T10:00:00Z</CreDtTm></GrpHdr>
    <TxInfAndSts>
      <OrgnlGrpInf><OrgnlMsgId>O1</OrgnlMsgId><OrgnlMsgNmId>pacs.008.001.08</OrgnlMsgNmId></OrgnlGrpInf>
      <OrgnlUETR>8a562c67-ca16-48ba-b074-65581be6f011</OrgnlUETR>
      <TxSts>RJCT</TxSts>
      <StsRsnInf><Rsn><Cd>AC03</Cd></Rsn><AddtlInf>no such account</AddtlInf></StsRsnInf>
    </TxInfAndSts>
  </FIToFIPmtStsRpt>
</Document>""".encode()


# --- hardened parsing ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "error", "text"),
    [
        (b"", EmptyMessage, "empty"),
        (b"  \n\t ", EmptyMessage, "empty"),
        (b"<Document", NotWellFormed, "not well-formed"),
        (b"just text", NotWellFormed, "not well-formed"),
        (
            b'<!DOCTYPE d [<!ENTITY x "boom">]><Document>&x;</Document>',
            ForbiddenDTD,
            "DOCTYPE",
        ),
        (
            b'<!DOCTYPE d SYSTEM "http://example.invalid/x.dtd"><Document/>',
            ForbiddenDTD,
            "DOCTYPE",
        ),
        (b'<Document xmlns="urn:example:other"/>', UnknownNamespace, "urn:example:other"),
        (b"<Document/>", UnknownNamespace, "no namespace"),
        (b"<Invoice/>", UnknownNamespace, "Invoice"),
        (
            b'<BizMsg xmlns="urn:rtpswitch:xsd:bizmsg.001"><Document xmlns="'
            + PACS002_NS.encode()
            + b'"/></BizMsg>',
            BadEnvelope,
            "AppHdr",
        ),
        (b"<a>" * 300 + b"</a>" * 300, MessageTooDeep, "deeper"),
    ],
)
def test_unusable_input_is_refused_with_a_clear_error(
    data: bytes, error: type[Exception], text: str
) -> None:
    with pytest.raises(error) as info:
        parse(data)
    assert text in str(info.value)
    assert "\n" not in str(info.value)


def test_entities_are_never_expanded_even_without_doctype_check() -> None:
    billion = b'<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;">]><l>&b;</l>'
    with pytest.raises(ForbiddenDTD):
        parse(billion)


def test_size_limit() -> None:
    with pytest.raises(MessageTooLarge, match="over the limit of 100"):
        parse(SMALL_PACS002, ParseLimits(max_bytes=100))


def test_configured_depth_limit_below_the_parser_limit() -> None:
    deep = f'<Document xmlns="{PACS002_NS}">'.encode() + b"<a>" * 10 + b"</a>" * 10
    deep += b"</Document>"
    with pytest.raises(MessageTooDeep, match="8 levels"):
        parse(deep, ParseLimits(max_depth=8))
    assert parse(deep, ParseLimits(max_depth=20)).mtype is MessageType.PACS_002


def test_message_type_comes_from_the_namespace() -> None:
    msg = parse(SMALL_PACS002)
    assert msg.mtype is MessageType.PACS_002
    assert msg.header is None
    assert validate(msg) == []


def test_schema_issues_carry_line_and_readable_path() -> None:
    bad = SMALL_PACS002.replace(b"<TxSts>RJCT</TxSts>", b"<TxSts>REJECTED</TxSts>")
    issues = validate(parse(bad))
    assert len(issues) == 1
    assert issues[0].line == 8
    assert issues[0].path == "/Document/FIToFIPmtStsRpt/TxInfAndSts/TxSts"
    assert "maxLength" in issues[0].message
    assert "{" not in issues[0].message  # namespaces stripped for people


def test_header_must_name_the_enclosed_document() -> None:
    raw = (EXAMPLES / "pacs.002-acsp.xml").read_bytes()
    wrong = raw.replace(b"<MsgDefIdr>pacs.002.001.10<", b"<MsgDefIdr>pacs.008.001.08<")
    issues = validate(parse(wrong))
    assert [i.path for i in issues] == ["/BizMsg/AppHdr/MsgDefIdr"]


# --- views -----------------------------------------------------------------------------


def test_credit_transfer_view_by_bicfi() -> None:
    msg = parse((EXAMPLES / "pacs.008-bicfi.xml").read_bytes())
    assert msg.document is not None and msg.header is not None
    hdr = views.header(msg.header)
    assert hdr.from_bicfi == "BNKAUS33XXX" and hdr.msg_def_idr == "pacs.008.001.08"
    ct = views.credit_transfer(msg.document)
    assert ct.nb_of_txs == 1 and ct.settlement_method == "CLRG"
    tx = ct.transactions[0]
    assert tx.amount == views.Amount(value=Decimal("1250.00"), currency="USD")
    assert tx.debtor_agent.bicfi == "BNKAUS33XXX"
    assert tx.creditor_agent.bicfi == "BNKBUS33XXX"
    assert tx.uetr is not None and len(tx.uetr) == 36
    assert tx.creditor_account is not None and tx.creditor_account.id


def test_views_share_one_agent_object_per_identity() -> None:
    """A pacs.008 names the debtor agent several times (instructing agent, debtor agent):
    one object serves them all, within a message and across messages, so a batch of
    views pickles it once."""
    data = (EXAMPLES / "pacs.008-bicfi.xml").read_bytes()
    first, second = parse(data), parse(data)
    assert first.document is not None and second.document is not None
    tx = views.credit_transfer(first.document).transactions[0]
    again = views.credit_transfer(second.document).transactions[0]
    assert tx.instructing_agent == tx.debtor_agent
    assert tx.instructing_agent is tx.debtor_agent is again.debtor_agent
    assert tx.creditor_agent is again.creditor_agent
    assert tx.debtor_agent is not tx.creditor_agent


def test_credit_transfer_view_by_member_id_and_proxy() -> None:
    usaba = parse((EXAMPLES / "pacs.008-usaba.xml").read_bytes())
    assert usaba.document is not None
    tx = views.credit_transfer(usaba.document).transactions[0]
    assert tx.debtor_agent.bicfi is None and tx.debtor_agent.member_id
    assert tx.debtor_agent.clearing_system == "USABA"
    proxy = parse((EXAMPLES / "pacs.008-proxy.xml").read_bytes())
    assert proxy.document is not None
    ptx = views.credit_transfer(proxy.document).transactions[0]
    assert ptx.creditor_account is not None and ptx.creditor_account.proxy is not None
    assert ptx.creditor_account.proxy.type == "VPA"
    assert ptx.creditor_account.other_id == "NOTPROVIDED"


def test_batch_view_has_every_transaction() -> None:
    msg = parse((EXAMPLES / "pacs.008-batch.xml").read_bytes())
    assert msg.document is not None
    ct = views.credit_transfer(msg.document)
    assert ct.nb_of_txs == len(ct.transactions) == 3
    assert ct.total_amount is not None
    assert sum(t.amount.value for t in ct.transactions) == ct.total_amount.value


def test_status_report_view() -> None:
    msg = parse(SMALL_PACS002)
    assert msg.document is not None
    st = views.status_report(msg.document).transactions[0]
    assert (st.status, st.reasons, st.additional_info) == ("RJCT", ("AC03",), ("no such account",))
    assert st.original_msg_id == "O1"


def test_other_views() -> None:
    for name, reader in (
        ("pacs.028.xml", views.status_request),
        ("admi.002.xml", views.message_reject),
        ("admi.004.xml", views.system_event),
    ):
        msg = parse((EXAMPLES / name).read_bytes())
        assert msg.document is not None
        assert views.document_view(msg) == reader(msg.document)


def test_views_are_frozen_for_the_type_checker_and_hashable() -> None:
    # Immutability is enforced by mypy (strict, in CI): `view` is a frozen dataclass
    # transform, so assigning a field is a type error; at run time views stay cheap to
    # pickle (they cross from the reader processes to the engine).
    transform = views.view.__dataclass_transform__  # type: ignore[attr-defined]
    assert transform["frozen_default"] is True
    agent = views.Agent(bicfi="BNKAUS33XXX")
    assert hash(agent) == hash(views.Agent(bicfi="BNKAUS33XXX"))
    with pytest.raises(views.ViewError):
        views.Agent()


def test_views_survive_pickling() -> None:
    msg = parse((EXAMPLES / "pacs.008-bicfi.xml").read_bytes())
    assert msg.document is not None and msg.header is not None
    for view in (views.credit_transfer(msg.document), views.header(msg.header)):
        assert pickle.loads(pickle.dumps(view)) == view


# --- builders: valid for the scheme and the ISO base alike ---------------------------------


def _bizmsg(mtype: MessageType, document: bytes, receiver: views.Agent = BANK_A) -> bytes:
    hdr = build.header(
        sender=SWITCH, receiver=receiver, biz_msg_idr="SW000001", mtype=mtype, created=NOW
    )
    return build.business_message(hdr, document)


BUILT = {
    "pacs.002 RJCT by member id": _bizmsg(
        MessageType.PACS_002,
        build.status_report(
            msg_id="SW000002",
            created=NOW,
            status="RJCT",
            original_msg_id="BNKA-1",
            original_end_to_end_id="E2E & <1>",
            original_tx_id="TX1",
            original_instr_id="I1",
            original_uetr="8a562c67-ca16-48ba-b074-65581be6f011",
            reason="AB05",
            additional_info="creditor agent did not answer in time " * 5,
            instructing_agent=views.Agent(member_id="000000000"),
            instructed_agent=BANK_B_ABA,
        ),
    ),
    "pacs.002 ACSC": _bizmsg(
        MessageType.PACS_002,
        build.status_report(
            msg_id="SW000003",
            created=NOW,
            status="ACSC",
            original_msg_id="BNKA-1",
            accepted_at=NOW,
            clearing_ref="P1",
            instructing_agent=SWITCH,
            instructed_agent=BANK_A,
        ),
    ),
    "admi.002": _bizmsg(
        MessageType.ADMI_002,
        build.message_reject(
            reference="BNKA-1",
            reason="unusable",
            rejected_at=NOW,
            description="not well-formed XML: <oops>",
            error_location="line 1",
        ),
    ),
    "admi.004": _bizmsg(
        MessageType.ADMI_004,
        build.system_event(code="RLVR", time=NOW, params=("2026-11-21",), description="rollover"),
    ),
}


@pytest.mark.parametrize("name", sorted(BUILT))
def test_built_messages_are_valid_for_scheme_and_base(name: str) -> None:
    raw = BUILT[name]
    assert validate(parse(raw)) == []
    assert base_errors(raw) == []


def test_built_status_report_reads_back() -> None:
    msg = parse(BUILT["pacs.002 RJCT by member id"])
    assert msg.document is not None
    st = views.status_report(msg.document).transactions[0]
    assert st.original_end_to_end_id == "E2E & <1>"
    assert st.reasons == ("AB05",)
    assert st.instructed_agent == BANK_B_ABA
    assert len(st.additional_info[0]) == 105


def test_forwarding_copy_keeps_everything_and_can_name_the_resolved_agent() -> None:
    msg = parse((EXAMPLES / "pacs.008-proxy.xml").read_bytes())
    assert msg.document is not None
    same = build.forward_credit_transfer(msg.document)
    original = etree.fromstring(etree.tostring(msg.document))
    assert etree.tostring(etree.fromstring(same), method="c14n") == etree.tostring(
        original, method="c14n"
    )
    resolved = build.forward_credit_transfer(
        msg.document,
        creditor_agent=views.Agent(bicfi="BNKBUS33XXX"),
        instructed_agent=views.Agent(bicfi="BNKBUS33XXX"),
        creditor_account_id="987654321000",
    )
    raw = _bizmsg(MessageType.PACS_008, resolved, views.Agent(bicfi="BNKBUS33XXX"))
    assert validate(parse(raw)) == []
    assert base_errors(raw) == []
    out = parse(raw)
    assert out.document is not None
    tx = views.credit_transfer(out.document).transactions[0]
    assert tx.creditor_agent.bicfi == "BNKBUS33XXX"
    assert tx.creditor_account is not None and tx.creditor_account.other_id == "987654321000"
    assert tx.creditor_account.proxy is not None  # the alias stays
    # In place: the same bytes, made in the document itself (which is left changed).
    untouched = etree.tostring(msg.document)
    in_place = build.forward_credit_transfer(
        msg.document,
        creditor_agent=views.Agent(bicfi="BNKBUS33XXX"),
        instructed_agent=views.Agent(bicfi="BNKBUS33XXX"),
        creditor_account_id="987654321000",
        in_place=True,
    )
    assert in_place == resolved
    assert etree.tostring(msg.document) != untouched


_Q8 = "{" + MessageType.PACS_008.namespace + "}"


def _creditor_agent(inner: str, name: str = "CdtrAgt") -> etree._Element:
    """A pacs.008 CdtrAgt (or another agent, `name`) whose FinInstnId holds `inner`."""
    return etree.fromstring(
        f'<{name} xmlns="{_Q8[1:-1]}"><FinInstnId>{inner}</FinInstnId></{name}>'
    )


_MEMBER = "<ClrSysMmbId><ClrSysId><Cd>{cd}</Cd></ClrSysId><MmbId>{id}</MmbId></ClrSysMmbId>"


@pytest.mark.parametrize(
    ("named", "agent", "expected"),
    [
        # Named the same way: only the text changes.
        (
            "<BICFI>SWCHUS33XXX</BICFI>",
            views.Agent(bicfi="BNKBUS33XXX"),
            [("BICFI", "BNKBUS33XXX")],
        ),
        (
            _MEMBER.format(cd="USABA", id="000000000"),
            views.Agent(member_id="021000021"),
            [("ClrSysMmbId", None), ("ClrSysId", None), ("Cd", "USABA"), ("MmbId", "021000021")],
        ),
        # Anything else is rebuilt: the agent named, and nothing the debtor agent wrote.
        (
            "<BICFI>SWCHUS33XXX</BICFI><Nm>The switch</Nm>",
            views.Agent(bicfi="BNKBUS33XXX"),
            [("BICFI", "BNKBUS33XXX")],
        ),
        (
            _MEMBER.format(cd="USABA", id="000000000"),
            views.Agent(member_id="123456", clearing_system="GBDSC"),
            [("ClrSysMmbId", None), ("ClrSysId", None), ("Cd", "GBDSC"), ("MmbId", "123456")],
        ),
        (
            _MEMBER.format(cd="USABA", id="000000000"),
            views.Agent(bicfi="BNKBUS33XXX"),
            [("BICFI", "BNKBUS33XXX")],
        ),
        (
            "<BICFI>SWCHUS33XXX</BICFI>",
            views.Agent(member_id="021000021"),
            [("ClrSysMmbId", None), ("ClrSysId", None), ("Cd", "USABA"), ("MmbId", "021000021")],
        ),
    ],
)
def test_forwarding_copy_names_the_resolved_creditor_agent_however_it_was_named(
    named: str, agent: views.Agent, expected: list[tuple[str, str | None]]
) -> None:
    msg = parse((EXAMPLES / "pacs.008-proxy.xml").read_bytes())
    assert msg.document is not None
    tx = next(msg.document.iter(_Q8 + "CdtTrfTxInf"))
    old = tx.find(_Q8 + "CdtrAgt")
    assert old is not None
    old.getparent().replace(old, _creditor_agent(named))  # type: ignore[union-attr]
    forwarded = build.forward_credit_transfer(msg.document, creditor_agent=agent)
    doc = etree.fromstring(forwarded)
    cdtr_agt = next(doc.iter(_Q8 + "CdtrAgt"))
    fin = cdtr_agt[0]
    assert len(cdtr_agt) == 1 and fin.tag == _Q8 + "FinInstnId"
    assert [(etree.QName(e).localname, e.text) for e in fin.iterdescendants()] == expected
    raw = _bizmsg(MessageType.PACS_008, forwarded, views.Agent(bicfi="BNKBUS33XXX"))
    assert validate(parse(raw)) == []
    assert base_errors(raw) == []


def test_forwarding_copy_made_from_the_elements_the_view_found_is_the_same() -> None:
    raw = (EXAMPLES / "pacs.008-proxy.xml").read_bytes()
    owner = views.Agent(bicfi="BNKBUS33XXX")

    def forward(doc: etree._Element, found: views.Found | None, in_place: bool) -> bytes:
        return build.forward_credit_transfer(
            doc,
            creditor_agent=owner,
            instructed_agent=owner,
            creditor_account_id="987654321000",
            in_place=in_place,
            found=found,
        )

    searched = parse(raw).document
    assert searched is not None
    expected = forward(searched, None, True)
    doc = parse(raw).document
    assert doc is not None
    found = views.Found()
    view = views.credit_transfer(doc, found)
    assert view == views.credit_transfer(doc)  # finding changes nothing in the view
    assert found.transaction and found.group
    with pytest.raises(ValueError, match="in place only"):
        forward(doc, found, False)
    assert forward(doc, found, True) == expected


def test_forwarding_copy_names_the_instructed_agent_in_the_group_header_too() -> None:
    msg = parse((EXAMPLES / "pacs.008-proxy.xml").read_bytes())
    assert msg.document is not None
    grp = next(msg.document.iter(_Q8 + "GrpHdr"))
    grp.append(_creditor_agent("<BICFI>SWCHUS33XXX</BICFI>", "InstdAgt"))
    forwarded = build.forward_credit_transfer(
        msg.document, instructed_agent=views.Agent(bicfi="BNKBUS33XXX")
    )
    doc = etree.fromstring(forwarded)
    named = [e.findtext(f"{_Q8}FinInstnId/{_Q8}BICFI") for e in doc.iter(_Q8 + "InstdAgt")]
    assert named == ["BNKBUS33XXX", "BNKBUS33XXX"]  # the group header's and the transaction's
    raw = _bizmsg(MessageType.PACS_008, forwarded, views.Agent(bicfi="BNKBUS33XXX"))
    assert validate(parse(raw)) == []


def test_a_child_is_taken_from_its_usual_place_or_else_searched_for() -> None:
    el = etree.fromstring('<a xmlns="urn:x"><b/><c><d>1</d></c><e/></a>')
    q = "{urn:x}"
    found = build._child(el, q, ("c", 1), ("d", 0))
    assert found is not None and found.text == "1"  # where the step said
    assert build._child(el, q, ("c", 0), ("d", -1)) is found  # elsewhere: searched for
    assert build._child(el, q, ("e", 7)) is el[2]  # a place past the end: searched for
    assert build._child(el, q, ("x", 0)) is None
    assert build._child(el, q, ("c", 1), ("x", 0)) is None
    assert build._child(None, q, ("c", 1)) is None


def test_timestamps_must_be_aware() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build.iso_datetime(datetime(2026, 1, 1))
    assert build.iso_datetime(NOW) == "2026-11-21T14:03:11.123Z"


# --- reason codes ----------------------------------------------------------------------


def test_reason_registry_covers_the_rulebook() -> None:
    rulebook = {"FF01", "DS0B", "DS0C", "DS0D", "RC01", "DUPL", "AM02", "AM03", "AM04"}
    rulebook |= {"AM14", "RC04", "BE23", "AG01", "AB08", "AB05", "RR04"}
    assert rulebook == SWITCH_REASONS
    assert {"AC03", "AC04", "AC06"} <= set(REASONS)
    assert reason("AB05").name == "TimeoutCreditorAgent"
    with pytest.raises(KeyError, match="XXXX"):
        reason("XXXX")


# --- the validate command --------------------------------------------------------------


def test_cli_validates_every_example(capsys: pytest.CaptureFixture[str]) -> None:
    files = sorted(str(p) for p in EXAMPLES.glob("*.xml"))
    assert main(["validate", *files]) == 0
    out = capsys.readouterr().out.splitlines()
    assert len(out) == len(files)
    assert all(line.endswith(": valid") for line in out)


def test_cli_reports_each_kind_of_bad_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    good = EXAMPLES / "pacs.008-bicfi.xml"
    raw = good.read_bytes()
    cases = {
        "empty.xml": b"",
        "notxml.xml": b"%PDF-1.7",
        "dtd.xml": b'<!DOCTYPE x [<!ENTITY e SYSTEM "file:///etc/passwd">]><x>&e;</x>',
        "ns.xml": raw.replace(b"pacs.008.001.08", b"pacs.008.001.99"),
        "eur.xml": raw.replace(b'Ccy="USD"', b'Ccy="EUR"'),
        "negative.xml": raw.replace(b">1250.00<", b">-1250.00<"),
        "missing.xml": raw.replace(b"<ChrgBr>SLEV</ChrgBr>", b""),
    }
    for name, data in cases.items():
        (tmp_path / name).write_bytes(data)
    files = [str(good)] + [str(tmp_path / n) for n in cases] + [str(tmp_path / "absent.xml")]
    assert main(["validate", "--json", *files]) == 1
    verdicts = {Path(v["file"]).name: v for v in json.loads(capsys.readouterr().out)}
    assert verdicts["pacs.008-bicfi.xml"]["valid"] is True
    assert "empty" in verdicts["empty.xml"]["error"]
    assert "not well-formed" in verdicts["notxml.xml"]["error"]
    assert "DOCTYPE" in verdicts["dtd.xml"]["error"]
    assert "unknown message namespace" in verdicts["ns.xml"]["error"]
    assert "cannot read" in verdicts["absent.xml"]["error"]
    for name, where in (
        ("eur.xml", "IntrBkSttlmAmt"),
        ("negative.xml", "IntrBkSttlmAmt"),
        ("missing.xml", "CdtTrfTxInf"),
    ):
        v = verdicts[name]
        assert v["type"] == "pacs.008.001.08" and v["valid"] is False
        assert v["errors"] and all(e["line"] > 0 for e in v["errors"])
        assert any(where in e["path"] for e in v["errors"]), v["errors"]


def test_cli_text_output_names_line_and_path(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    raw = (EXAMPLES / "pacs.008-bicfi.xml").read_bytes().replace(b"<ChrgBr>SLEV", b"<ChrgBr>DEBT")
    f = tmp_path / "debt.xml"
    f.write_bytes(raw)
    assert main(["validate", str(f)]) == 1
    out = capsys.readouterr().out
    assert "pacs.008.001.08: invalid (1 errors)" in out
    assert "/BizMsg/Document/FIToFICstmrCdtTrf/CdtTrfTxInf/ChrgBr" in out
    assert "line " in out and "Traceback" not in out
