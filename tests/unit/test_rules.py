"""Business rules: every violation, with its reason code and field, in rulebook order."""

from __future__ import annotations

from dataclasses import replace
from decimal import Decimal
from typing import Any

import pytest

from switch.core.errors import AmountOverLimit, NotInstructingAgent
from switch.core.money import Money
from switch.core.rules import (
    RULES,
    AgentRef,
    Participant,
    ParticipantDirectory,
    ParticipantStatus,
    PaymentFacts,
    RuleContext,
    SchemeRules,
    Violation,
    check_payment,
    normalize_bicfi,
)

BANK_A = Participant(id="BNKAUS33XXX", member_id="011000015", name="Bank A")
BANK_B = Participant(id="BNKBUS44XXX", member_id="021000021", name="Bank B")
BANK_C = Participant(
    id="BNKCUS55XXX",
    member_id="031000037",
    name="Bank C",
    limit=Money(minor=50_000_00, currency="USD"),
)
SUSPENDED = Participant(
    id="BNKSUS66XXX", member_id="041000040", name="Bank S", status=ParticipantStatus.SUSPENDED
)
SIGNED_OFF = Participant(
    id="BNKOUS77XXX", member_id="051000050", name="Bank O", status=ParticipantStatus.SIGNED_OFF
)

SCHEME = SchemeRules(
    payment_limit=Money(minor=100_000_00, currency="USD"), switch_bicfi="RTPSUS33XXX"
)
CTX = RuleContext(
    rules=SCHEME,
    participants=ParticipantDirectory([BANK_A, BANK_B, BANK_C, SUSPENDED, SIGNED_OFF]),
)


def bic(p: Participant) -> AgentRef:
    return AgentRef(bicfi=p.id)


def facts(**changes: Any) -> PaymentFacts:
    """A valid payment from Bank A to Bank B, with `changes` applied."""
    base = PaymentFacts(
        sender=BANK_A.id,
        header_from=BANK_A.id,
        instructing_agent=bic(BANK_A),
        debtor_agent=bic(BANK_A),
        creditor_agent=bic(BANK_B),
        amount=Decimal("1250.00"),
        currency="USD",
        transactions_in_message=1,
    )
    return replace(base, **changes)


def from_sender(p: Participant, **changes: Any) -> PaymentFacts:
    """A valid-looking payment whose sender, header, InstgAgt and DbtrAgt are all `p`."""
    agents: dict[str, Any] = {
        "sender": p.id,
        "header_from": p.id,
        "instructing_agent": bic(p),
        "debtor_agent": bic(p),
    }
    return facts(**(agents | changes))


def codes(f: PaymentFacts, ctx: RuleContext = CTX) -> list[tuple[str, str]]:
    return [(v.reason, v.field) for v in check_payment(f, ctx)]


def test_valid_payment_has_no_violation() -> None:
    assert check_payment(facts(), CTX) == []


# --- one rule at a time -------------------------------------------------------------------


@pytest.mark.parametrize("n", [0, 2, 100])
def test_single_transaction(n: int) -> None:
    [v] = check_payment(facts(transactions_in_message=n), CTX)
    assert (v.reason, v.field) == ("FF01", "GrpHdr/NbOfTxs")
    assert str(n) in v.text


def test_header_from_must_be_sender() -> None:
    assert codes(facts(header_from=BANK_B.id)) == [("RC01", "AppHdr/Fr/FIId/FinInstnId")]


def test_header_from_unknown_bicfi() -> None:
    assert codes(facts(header_from="ZZZZUS00XXX")) == [("RC01", "AppHdr/Fr/FIId/FinInstnId")]


def test_instructing_agent_must_be_sender() -> None:
    assert codes(facts(instructing_agent=bic(BANK_B))) == [
        ("RC01", "CdtTrfTxInf/InstgAgt/FinInstnId")
    ]


def test_instructing_agent_is_optional() -> None:
    assert check_payment(facts(instructing_agent=None), CTX) == []


def test_debtor_agent_must_be_sender() -> None:
    [v] = check_payment(facts(debtor_agent=bic(BANK_B)), CTX)
    assert (v.reason, v.field) == ("RC01", "CdtTrfTxInf/DbtrAgt/FinInstnId")
    assert BANK_B.id in v.text
    assert BANK_A.id in v.text


def test_every_agent_not_the_sender_is_reported() -> None:
    f = facts(sender=BANK_B.id)  # header, InstgAgt and DbtrAgt all name Bank A
    assert codes(f) == [
        ("RC01", "AppHdr/Fr/FIId/FinInstnId"),
        ("RC01", "CdtTrfTxInf/InstgAgt/FinInstnId"),
        ("RC01", "CdtTrfTxInf/DbtrAgt/FinInstnId"),
    ]


def test_unknown_sender_is_never_the_instructing_agent() -> None:
    unknown = "ZZZZUS00XXX"
    f = facts(
        sender=unknown,
        header_from=unknown,
        instructing_agent=AgentRef(bicfi=unknown),
        debtor_agent=AgentRef(bicfi=unknown),
    )
    assert [r for r, _ in codes(f)] == ["RC01", "RC01", "RC01"]


@pytest.mark.parametrize("p", [SUSPENDED, SIGNED_OFF])
def test_debtor_agent_active(p: Participant) -> None:
    [v] = check_payment(from_sender(p), CTX)
    assert (v.reason, v.field) == ("AG01", "CdtTrfTxInf/DbtrAgt/FinInstnId")
    assert p.status in v.text


@pytest.mark.parametrize("currency", ["EUR", "usd", "XXX"])
def test_currency_is_scheme_currency(currency: str) -> None:
    [v] = check_payment(facts(currency=currency), CTX)
    assert (v.reason, v.field) == ("AM03", "CdtTrfTxInf/IntrBkSttlmAmt/@Ccy")


@pytest.mark.parametrize("amount", ["0", "0.00", "-1.00", "0.001", "10.123", "NaN", "Infinity"])
def test_amount_format(amount: str) -> None:
    [v] = check_payment(facts(amount=Decimal(amount)), CTX)
    assert (v.reason, v.field) == ("FF01", "CdtTrfTxInf/IntrBkSttlmAmt")


@pytest.mark.parametrize("amount", ["0.01", "1", "10.5", "10.500", "100000.00"])
def test_amount_accepted_up_to_scheme_limit(amount: str) -> None:
    assert check_payment(facts(amount=Decimal(amount)), CTX) == []


def test_amount_over_scheme_limit() -> None:
    [v] = check_payment(facts(amount=Decimal("100000.01")), CTX)
    assert (v.reason, v.field) == ("AM02", "CdtTrfTxInf/IntrBkSttlmAmt")
    assert "scheme limit 100000.00 USD" in v.text


def test_amount_over_participant_limit() -> None:
    assert check_payment(from_sender(BANK_C, amount=Decimal("50000.00")), CTX) == []
    [v] = check_payment(from_sender(BANK_C, amount=Decimal("50000.01")), CTX)
    assert (v.reason, v.field) == ("AM02", "CdtTrfTxInf/IntrBkSttlmAmt")
    assert BANK_C.id in v.text


def test_no_limit_check_in_a_foreign_currency() -> None:
    assert codes(facts(currency="EUR", amount=Decimal("999999999"))) == [
        ("AM03", "CdtTrfTxInf/IntrBkSttlmAmt/@Ccy")
    ]


def test_creditor_agent_unknown() -> None:
    [v] = check_payment(facts(creditor_agent=AgentRef(bicfi="ZZZZUS00XXX")), CTX)
    assert (v.reason, v.field) == ("RC04", "CdtTrfTxInf/CdtrAgt/FinInstnId")
    [v] = check_payment(facts(creditor_agent=AgentRef(member_id="999999999")), CTX)
    assert v.reason == "RC04"


@pytest.mark.parametrize(
    "agent",
    [
        AgentRef(member_id="000000000"),
        AgentRef(bicfi="RTPSUS33XXX"),
        AgentRef(bicfi="RTPSUS33"),
        AgentRef(bicfi="RTPSUS33XXX", member_id="000000000"),
    ],
)
def test_creditor_agent_may_be_the_switch_for_an_alias(agent: AgentRef) -> None:
    assert check_payment(facts(creditor_agent=agent), CTX) == []


def test_switch_and_a_participant_at_once_is_unknown() -> None:
    agent = AgentRef(bicfi=BANK_B.id, member_id="000000000")
    assert codes(facts(creditor_agent=agent)) == [("RC04", "CdtTrfTxInf/CdtrAgt/FinInstnId")]


@pytest.mark.parametrize("p", [SUSPENDED, SIGNED_OFF])
def test_creditor_agent_active(p: Participant) -> None:
    [v] = check_payment(facts(creditor_agent=bic(p)), CTX)
    assert (v.reason, v.field) == ("AB08", "CdtTrfTxInf/CdtrAgt/FinInstnId")


# --- all at once, in order ----------------------------------------------------------------


def test_all_violations_in_rulebook_order() -> None:
    f = facts(
        transactions_in_message=2,
        currency="EUR",
        creditor_agent=AgentRef(bicfi="ZZZZUS00XXX"),
    )
    assert codes(f) == [
        ("FF01", "GrpHdr/NbOfTxs"),
        ("AM03", "CdtTrfTxInf/IntrBkSttlmAmt/@Ccy"),
        ("RC04", "CdtTrfTxInf/CdtrAgt/FinInstnId"),
    ]


def test_every_rule_at_once() -> None:
    f = from_sender(
        SUSPENDED,
        header_from=BANK_B.id,
        transactions_in_message=3,
        amount=Decimal("200000.00"),
        creditor_agent=bic(SIGNED_OFF),
    )
    assert [v.reason for v in check_payment(f, CTX)] == ["FF01", "RC01", "AG01", "AM02", "AB08"]


def test_first_violation_becomes_the_reply_error() -> None:
    [v, *_] = check_payment(facts(debtor_agent=bic(BANK_B), amount=Decimal("1e9")), CTX)
    err = v.error()
    assert isinstance(err, NotInstructingAgent)
    assert err.reason == "RC01"
    assert err.field == "CdtTrfTxInf/DbtrAgt/FinInstnId"
    assert str(err) == v.text


def test_violation_error_class_by_reason() -> None:
    v = Violation(reason="AM02", field="CdtTrfTxInf/IntrBkSttlmAmt", text="too much")
    assert isinstance(v.error(), AmountOverLimit)


def test_rules_are_in_rulebook_order() -> None:
    assert [r.__name__ for r in RULES] == [
        "single_transaction",
        "sender_is_instructing_agent",
        "debtor_agent_active",
        "currency_is_scheme_currency",
        "amount_within_limits",
        "creditor_agent_known",
        "creditor_agent_active",
    ]


# --- agents by BICFI or by member id --------------------------------------------------------


def test_agents_matched_by_member_id() -> None:
    f = facts(
        instructing_agent=AgentRef(member_id=BANK_A.member_id),
        debtor_agent=AgentRef(member_id=BANK_A.member_id),
        creditor_agent=AgentRef(member_id=BANK_B.member_id),
    )
    assert check_payment(f, CTX) == []


def test_agents_matched_by_both_identifiers() -> None:
    f = facts(
        debtor_agent=AgentRef(bicfi=BANK_A.id, member_id=BANK_A.member_id),
        creditor_agent=AgentRef(bicfi=BANK_B.id, member_id=BANK_B.member_id),
    )
    assert check_payment(f, CTX) == []


def test_agents_matched_by_eight_character_bic() -> None:
    f = facts(header_from="BNKAUS33", debtor_agent=AgentRef(bicfi="BNKAUS33"))
    assert check_payment(f, CTX) == []
    assert normalize_bicfi("BNKAUS33") == "BNKAUS33XXX"


def test_disagreeing_identifiers_resolve_to_nobody() -> None:
    agent = AgentRef(bicfi=BANK_A.id, member_id=BANK_B.member_id)
    assert CTX.resolve(agent) is None
    assert codes(facts(debtor_agent=agent)) == [("RC01", "CdtTrfTxInf/DbtrAgt/FinInstnId")]


def test_member_id_of_debtor_agent_not_the_sender() -> None:
    f = facts(debtor_agent=AgentRef(member_id=BANK_B.member_id))
    assert codes(f) == [("RC01", "CdtTrfTxInf/DbtrAgt/FinInstnId")]


# --- domain types ---------------------------------------------------------------------------


def test_context_accepts_a_plain_mapping() -> None:
    ctx = RuleContext(rules=SCHEME, participants={BANK_A.id: BANK_A, BANK_B.id: BANK_B})
    assert isinstance(ctx.participants, ParticipantDirectory)
    assert check_payment(facts(), ctx) == []
    assert ctx.resolve(AgentRef(member_id=BANK_B.member_id)) is BANK_B


def test_directory_is_a_mapping_by_id() -> None:
    d = ParticipantDirectory([BANK_A, BANK_B])
    assert dict(d) == {BANK_A.id: BANK_A, BANK_B.id: BANK_B}
    assert d.by_member_id(BANK_A.member_id) is BANK_A
    assert d.by_bicfi("BNKBUS44") is BANK_B


def test_directory_refuses_duplicates() -> None:
    with pytest.raises(ValueError, match="twice"):
        ParticipantDirectory([BANK_A, replace(BANK_A, member_id="999999999")])
    with pytest.raises(ValueError, match="member id 011000015"):
        ParticipantDirectory([BANK_A, replace(BANK_B, member_id=BANK_A.member_id)])


def test_agent_ref_needs_an_identifier() -> None:
    with pytest.raises(ValueError, match="BICFI or a member id"):
        AgentRef()


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"id": "bad"}, "BICFI"),
        ({"member_id": "12345"}, "9 digits"),
        ({"name": ""}, "name"),
        ({"limit": Money(minor=0, currency="USD")}, "positive"),
        ({"status": "gone"}, "gone"),
    ],
)
def test_participant_validation(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        replace(BANK_A, **changes)


def test_participant_status_from_text() -> None:
    p = replace(BANK_A, status="suspended")  # type: ignore[arg-type]  # as read from config
    assert p.status is ParticipantStatus.SUSPENDED
    assert not p.active


@pytest.mark.parametrize(
    ("changes", "match"),
    [
        ({"payment_limit": Money(minor=1, currency="EUR")}, "scheme currency"),
        ({"payment_limit": Money(minor=0, currency="USD")}, "positive"),
        ({"switch_member_id": "0"}, "9 digits"),
        ({"switch_bicfi": "nope"}, "BICFI"),
    ],
)
def test_scheme_rules_validation(changes: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        replace(SCHEME, **changes)


def test_facts_amount_is_decimal() -> None:
    with pytest.raises(TypeError, match="Decimal"):
        facts(amount=1250.0)
