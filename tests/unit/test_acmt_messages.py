"""Alias lookup messages (RULEBOOK §5): acmt.023 request and acmt.024 report.

The views read what the directory and a bank's connector need; the switch's acmt.024
builder and the bank's acmt.023 builder write messages that both the scheme schemas and
the ISO base schemas accept, and that read back through the views unchanged; each of the
scheme's narrowings of the two messages refuses what it narrows away.
"""

from __future__ import annotations

import pickle
from collections.abc import Callable
from datetime import UTC, datetime

import pytest
from lxml import etree

from participants import messages
from switch.iso20022 import (
    MessageType,
    build,
    default_registry,
    message_type,
    parse,
    validate,
    views,
)
from switch.iso20022.views import (
    Agent,
    IdentificationVerificationReport,
    IdentificationVerificationRequest,
    Proxy,
    VerificationReport,
)
from tests.oracle import base_errors
from tools import usage_guideline

NOW = datetime(2026, 11, 21, 14, 10, 58, 310000, tzinfo=UTC)
SWITCH = Agent(bicfi="SWCHUS33XXX")
BANK_A = Agent(bicfi="BNKAUS33XXX")
BANK_B = Agent(bicfi="BNKBUS33XXX", member_id="011000015", clearing_system="USABA")
BANK_C_ABA = Agent(member_id="026009593", clearing_system="USABA")
ACMT023_NS = MessageType.ACMT_023.namespace
ACMT024_NS = MessageType.ACMT_024.namespace


def _agent(bicfi: str) -> str:
    return f"<Agt><FinInstnId><BICFI>{bicfi}</BICFI></FinInstnId></Agt>"


SMALL_ACMT023 = f"""<Document xmlns="{ACMT023_NS}">
  <IdVrfctnReq>
    <Assgnmt>
      <MsgId>M1</MsgId>
      <CreDtTm>2026-11-21T10:00:00Z</CreDtTm>
      <Cretr><Pty><Id><OrgId><Othr><Id>BIZ-77</Id></Othr></OrgId></Id></Pty></Cretr>
      <Assgnr>{_agent("BNKAUS33XXX")}</Assgnr>
      <Assgne>{_agent("SWCHUS33XXX")}</Assgne>
    </Assgnmt>
    <Vrfctn>
      <Id>V1</Id>
      <PtyAndAcctId>
        <Acct><Prxy><Tp><Cd>EMAL</Cd></Tp><Id>bob@example.com</Id></Prxy></Acct>
      </PtyAndAcctId>
    </Vrfctn>
    <Vrfctn>
      <Id>V2</Id>
      <PtyAndAcctId>
        <Acct><Prxy><Tp><Prtry>VPA</Prtry></Tp><Id>carol@bankc</Id></Prxy></Acct>
      </PtyAndAcctId>
    </Vrfctn>
  </IdVrfctnReq>
</Document>"""

SMALL_ACMT024 = f"""<Document xmlns="{ACMT024_NS}">
  <IdVrfctnRpt>
    <Assgnmt>
      <MsgId>SW1</MsgId>
      <CreDtTm>2026-11-21T10:00:01Z</CreDtTm>
      <Assgnr>{_agent("SWCHUS33XXX")}</Assgnr>
      <Assgne>{_agent("BNKAUS33XXX")}</Assgne>
    </Assgnmt>
    <OrgnlAssgnmt><MsgId>M1</MsgId></OrgnlAssgnmt>
    <Rpt>
      <OrgnlId>V1</OrgnlId>
      <Vrfctn>0</Vrfctn>
      <Rsn><Cd>BE23</Cd></Rsn>
    </Rpt>
    <Rpt>
      <OrgnlId>V2</OrgnlId>
      <Vrfctn>1</Vrfctn>
      <UpdtdPtyAndAcctId>
        <Pty><Nm>C**** D***</Nm></Pty>
        {_agent("BNKCUS33XXX")}
      </UpdtdPtyAndAcctId>
    </Rpt>
  </IdVrfctnRpt>
</Document>"""


def _doc(text: str) -> etree._Element:
    msg = parse(text.encode())
    assert msg.document is not None
    return msg.document


def _scheme_errors(doc: etree._Element) -> list[str]:
    schema = default_registry().schema(message_type(str(etree.QName(doc).namespace)))
    if schema.validate(doc):
        return []
    log: etree._ListErrorLog = schema.error_log
    return [e.message for e in log]


def _base_errors(doc: etree._Element) -> list[str]:
    return base_errors(etree.tostring(doc))


# --- registry and views ------------------------------------------------------------------


def test_registry_knows_both_messages() -> None:
    assert MessageType.ACMT_023.value == "acmt.023.001.04"
    assert MessageType.ACMT_024.value == "acmt.024.001.04"
    for mtype in (MessageType.ACMT_023, MessageType.ACMT_024):
        assert message_type(mtype.namespace) is mtype
        assert default_registry().path(mtype).is_file()
        default_registry().schema(mtype)


def test_request_view() -> None:
    doc = _doc(SMALL_ACMT023)
    assert _scheme_errors(doc) == []
    req = views.identification_verification_request(doc)
    assert (req.msg_id, req.created) == ("M1", "2026-11-21T10:00:00Z")
    assert (req.assigner, req.assignee) == (BANK_A, SWITCH)
    assert req.end_user == "BIZ-77"
    assert [v.id for v in req.verifications] == ["V1", "V2"]
    first, second = req.verifications
    assert first.proxy == Proxy(type_code="EMAL", type_proprietary=None, id="bob@example.com")
    assert (second.proxy.type, second.proxy.id) == ("VPA", "carol@bankc")
    assert first.end_user == second.end_user == "BIZ-77"


def test_request_without_creator_names_no_end_user() -> None:
    text = SMALL_ACMT023.replace(
        "<Cretr><Pty><Id><OrgId><Othr><Id>BIZ-77</Id></Othr></OrgId></Id></Pty></Cretr>", ""
    )
    req = views.identification_verification_request(_doc(text))
    assert req.end_user is None
    assert all(v.end_user is None for v in req.verifications)


def test_request_whose_creator_is_an_agent_names_no_end_user() -> None:
    text = SMALL_ACMT023.replace(
        "<Pty><Id><OrgId><Othr><Id>BIZ-77</Id></Othr></OrgId></Id></Pty>", _agent("BNKAUS33XXX")
    )
    assert views.identification_verification_request(_doc(text)).end_user is None


def test_an_assigner_that_is_a_party_cannot_be_read() -> None:
    text = SMALL_ACMT023.replace(
        f"<Assgnr>{_agent('BNKAUS33XXX')}</Assgnr>", "<Assgnr><Pty><Nm>Bank A</Nm></Pty></Assgnr>"
    )
    doc = _doc(text)
    assert _scheme_errors(doc) == []  # a business rule, not a schema one
    with pytest.raises(views.ViewError, match="Assgnr names no agent"):
        views.identification_verification_request(doc)


def test_report_view() -> None:
    doc = _doc(SMALL_ACMT024)
    assert _scheme_errors(doc) == []
    rpt = views.identification_verification_report(doc)
    assert (rpt.msg_id, rpt.assigner, rpt.assignee) == ("SW1", SWITCH, BANK_A)
    assert (rpt.original_msg_id, rpt.original_created) == ("M1", None)
    assert rpt.reports == (
        VerificationReport(original_id="V1", verified=False, reason="BE23"),
        VerificationReport(
            original_id="V2",
            verified=True,
            agent=Agent(bicfi="BNKCUS33XXX"),
            name="C**** D***",
        ),
    )


def test_document_view_dispatches_both_types() -> None:
    for text, kind in (
        (SMALL_ACMT023, IdentificationVerificationRequest),
        (SMALL_ACMT024, IdentificationVerificationReport),
    ):
        msg = parse(text.encode())
        found = views.document_view(msg)
        assert isinstance(found, kind)
        assert pickle.loads(pickle.dumps(found)) == found
        assert hash(found) == hash(pickle.loads(pickle.dumps(found)))


# --- the switch's acmt.024 builder --------------------------------------------------------

FOUND = VerificationReport(
    original_id="V1",
    verified=True,
    proxy=Proxy(type_code=None, type_proprietary="VPA", id="bob@bankb"),
    agent=BANK_B,
    name="B** J****",
)
REPORTS: dict[str, tuple[VerificationReport, ...]] = {
    "found": (FOUND,),
    "found, agent by member id only": (
        VerificationReport(original_id="V1", verified=True, agent=BANK_C_ABA, name="A & <B>"),
    ),
    "not found": (
        VerificationReport(
            original_id="V1",
            verified=False,
            reason="BE23",
            proxy=Proxy(type_code="TELE", type_proprietary=None, id="+12125550123"),
        ),
    ),
    "refused, proprietary reason": (
        VerificationReport(original_id="V1", verified=False, reason="LOOKUP-LIMIT-REACHED"),
    ),
    "several": (
        FOUND,
        VerificationReport(original_id="V2", verified=False, reason="BE23"),
    ),
}
ORIGINAL_CREATED: dict[str, datetime | str | None] = {
    "found": NOW,
    "found, agent by member id only": "2026-11-21T09:10:58.31-05:00",
    "not found": None,
    "refused, proprietary reason": NOW,
    "several": "2026-11-21T14:10:58.310Z",
}


def _report(name: str) -> bytes:
    return build.identification_verification_report(
        msg_id="SW000010",
        created=NOW,
        original_msg_id="M20261121BNKAUS33XXX0000000188",
        original_created=ORIGINAL_CREATED[name],
        assigner=SWITCH,
        assignee=BANK_A,
        reports=REPORTS[name],
    )


def _bizmsg(mtype: MessageType, document: bytes, sender: Agent, receiver: Agent) -> bytes:
    hdr = build.header(
        sender=sender, receiver=receiver, biz_msg_idr="BIZ000001", mtype=mtype, created=NOW
    )
    return build.business_message(hdr, document)


@pytest.mark.parametrize("name", list(REPORTS))
def test_built_report_is_valid_for_scheme_and_base(name: str) -> None:
    raw = _bizmsg(MessageType.ACMT_024, _report(name), SWITCH, BANK_A)
    assert validate(parse(raw)) == []
    assert base_errors(raw) == []


@pytest.mark.parametrize("name", list(REPORTS))
def test_built_report_reads_back(name: str) -> None:
    raw = _bizmsg(MessageType.ACMT_024, _report(name), SWITCH, BANK_A)
    rpt = messages.read_identification_verification_report(raw)
    assert rpt.reports == tuple(
        VerificationReport(
            original_id=r.original_id,
            verified=r.verified,
            reason=r.reason if r.reason is None or len(r.reason) <= 4 else r.reason[:35],
            proxy=r.proxy,
            agent=r.agent,
            name=r.name,
        )
        for r in REPORTS[name]
    )
    assert (rpt.msg_id, rpt.assigner, rpt.assignee) == ("SW000010", SWITCH, BANK_A)
    assert rpt.original_msg_id == "M20261121BNKAUS33XXX0000000188"
    written = ORIGINAL_CREATED[name]
    assert rpt.original_created == (
        build.iso_datetime(written) if isinstance(written, datetime) else written
    )


def test_report_writes_no_account_number() -> None:
    assert b"<Acct><Id>" not in _report("found")
    assert b"<Rsn>" not in _report("found")


def test_report_needs_a_verification() -> None:
    with pytest.raises(ValueError, match="at least one"):
        build.identification_verification_report(
            msg_id="SW1",
            created=NOW,
            original_msg_id="M1",
            assigner=SWITCH,
            assignee=BANK_A,
            reports=(),
        )


# --- the bank's acmt.023 builder ----------------------------------------------------------


@pytest.mark.parametrize(
    ("alias_type", "alias", "code", "proprietary"),
    [
        ("VPA", "bob@bankb", None, "VPA"),
        ("EVP", "6f1c2d9e-4b7a-4e21-9c3d-8a5b7e0f1a2c", None, "EVP"),
        ("EMAL", "bob@example.com", "EMAL", None),
        ("TELE", "+12125550123", "TELE", None),
    ],
)
@pytest.mark.parametrize("end_user", [None, "CUST-000451"])
def test_built_request_is_valid_and_reads_back(
    alias_type: str, alias: str, code: str | None, proprietary: str | None, end_user: str | None
) -> None:
    doc = messages.identification_verification_request(
        msg_id="M20261121BNKAUS33XXX0000000188",
        created=NOW,
        alias_type=alias_type,
        alias=alias,
        assigner=BANK_A,
        end_user=end_user,
    )
    raw = messages.envelope(
        BANK_A, messages.SWITCH, MessageType.ACMT_023, "M20261121BNKAUS33XXX0000000188", doc, NOW
    )
    msg = parse(raw)
    assert validate(msg) == []
    assert base_errors(raw) == []
    req = views.document_view(msg)
    assert req == IdentificationVerificationRequest(
        msg_id="M20261121BNKAUS33XXX0000000188",
        created=build.iso_datetime(NOW),
        assigner=BANK_A,
        assignee=SWITCH,
        end_user=end_user,
        verifications=(
            views.IdentificationVerification(
                id="M20261121BNKAUS33XXX0000000188",
                proxy=Proxy(type_code=code, type_proprietary=proprietary, id=alias),
                end_user=end_user,
            ),
        ),
    )


def test_request_verification_id_and_member_id_agents() -> None:
    doc = messages.identification_verification_request(
        msg_id="M2",
        created=NOW,
        alias_type="VPA",
        alias="bob@bankb",
        assigner=BANK_C_ABA,
        assignee=Agent(member_id=messages.SWITCH_MEMBER_ID),
        verification_id="V-2",
    )
    assert _scheme_errors(doc) == []
    assert _base_errors(doc) == []
    req = views.identification_verification_request(doc)
    assert req.assigner == BANK_C_ABA
    assert req.assignee == Agent(member_id="000000000", clearing_system="USABA")
    assert [v.id for v in req.verifications] == ["V-2"]


def test_unknown_alias_type_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown alias type 'IBAN'"):
        messages.alias_proxy("IBAN", "US00")


# --- reading an answer on the bank side --------------------------------------------------


def test_reading_an_answer_refuses_anything_else() -> None:
    with pytest.raises(ValueError, match="not a usable message"):
        messages.read_identification_verification_report(b"<oops")
    with pytest.raises(ValueError, match=r"not an acmt\.024"):
        messages.read_identification_verification_report(SMALL_ACMT023.encode())
    broken = SMALL_ACMT024.replace("<OrgnlAssgnmt><MsgId>M1</MsgId></OrgnlAssgnmt>", "")
    with pytest.raises(ValueError, match=r"invalid acmt\.024"):
        messages.read_identification_verification_report(broken.encode())
    assert messages.read_identification_verification_report(SMALL_ACMT024.encode()).msg_id == "SW1"


# --- what the scheme narrows away -------------------------------------------------------


def _remove(xpath: str, ns: str) -> Callable[[etree._Element], None]:
    def mutate(doc: etree._Element) -> None:
        found = doc.xpath(xpath, namespaces={"p": ns})
        assert isinstance(found, list) and found, xpath
        for el in found:
            assert isinstance(el, etree._Element)
            parent = el.getparent()
            assert parent is not None
            parent.remove(el)

    return mutate


def _account_by_number(doc: etree._Element) -> None:
    """The account to verify named by its number instead of by its alias."""
    q = f"{{{ACMT023_NS}}}"
    for prxy in list(doc.iter(q + "Prxy")):
        acct = prxy.getparent()
        assert acct is not None
        acct.remove(prxy)
        other = etree.SubElement(etree.SubElement(acct, q + "Id"), q + "Othr")
        etree.SubElement(other, q + "Id").text = "12345678"


NARROWED_AWAY: dict[str, tuple[str, str, Callable[[etree._Element], None]]] = {
    # narrowing path: (message text, namespace, mutation)
    "Document/IdVrfctnReq/Vrfctn/PtyAndAcctId/Acct": (
        SMALL_ACMT023,
        ACMT023_NS,
        _remove("//p:PtyAndAcctId/p:Acct", ACMT023_NS),
    ),
    "Document/IdVrfctnReq/Vrfctn/PtyAndAcctId/Acct/Prxy": (
        SMALL_ACMT023,
        ACMT023_NS,
        _account_by_number,
    ),
    "Document/IdVrfctnReq/Vrfctn/PtyAndAcctId/Acct/Prxy/Tp": (
        SMALL_ACMT023,
        ACMT023_NS,
        _remove("//p:Prxy/p:Tp", ACMT023_NS),
    ),
    "Document/IdVrfctnRpt/OrgnlAssgnmt": (
        SMALL_ACMT024,
        ACMT024_NS,
        _remove("//p:OrgnlAssgnmt", ACMT024_NS),
    ),
    "Document/IdVrfctnRpt/OrgnlAssgnmt/MsgId": (
        SMALL_ACMT024.replace(
            "<MsgId>M1</MsgId></OrgnlAssgnmt>",
            "<MsgId>M1</MsgId><CreDtTm>2026-11-21T10:00:00Z</CreDtTm></OrgnlAssgnmt>",
        ),
        ACMT024_NS,
        _remove("//p:OrgnlAssgnmt/p:MsgId", ACMT024_NS),
    ),
}


def test_every_acmt_narrowing_has_a_case() -> None:
    declared = {
        n.path for n in usage_guideline.NARROWINGS if n.message.startswith(("acmt.023", "acmt.024"))
    }
    assert declared == set(NARROWED_AWAY)


@pytest.mark.parametrize("path", list(NARROWED_AWAY))
def test_narrowed_away_document_fails_the_scheme_only(path: str) -> None:
    text, _, mutate = NARROWED_AWAY[path]
    doc = _doc(text)
    assert _scheme_errors(doc) == []
    assert _base_errors(doc) == []
    mutate(doc)
    assert _scheme_errors(doc) != []
    assert _base_errors(doc) == []
