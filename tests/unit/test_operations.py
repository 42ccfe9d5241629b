"""Operator roles and tokens, operator commands, maker-checker rules, alert rules."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from switch.core import Money, Participant, ParticipantStatus
from switch.core.state import PaymentEvent, PaymentState
from switch.ledger import Book, Position
from switch.operations import (
    Action,
    AlertBook,
    AlertLimits,
    Observation,
    OperatorCommand,
    ParticipantState,
    Refused,
    Role,
    allows,
    check_decision,
    decide,
    issue_token,
    needs_approval,
    parse_token,
    secret_matches,
)
from switch.operations.trail import transitions

NOW = datetime(2026, 11, 21, 12, 0, tzinfo=UTC)
A = Participant(id="BNKAUS33XXX", member_id="021000021", name="Bank A")
B = Participant(id="BNKBUS33XXX", member_id="011000015", name="Bank B")


def book_with(amounts: dict[str, int]) -> Book:
    book = Book()
    for pid, amount in amounts.items():
        book.open(pid)
        if amount:
            book.fund(pid, amount, "opening")
    return book


def cmd(action: Action, participant: str = A.id, **kw: Any) -> OperatorCommand:
    return OperatorCommand(
        action=action, participant=participant, actor="alice", role="operator", **kw
    )


# --- roles and tokens ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "needed", "ok"),
    [
        (Role.VIEWER, Role.VIEWER, True),
        (Role.VIEWER, Role.OPERATOR, False),
        (Role.OPERATOR, Role.VIEWER, True),
        (Role.OPERATOR, Role.ADMIN, False),
        (Role.ADMIN, Role.OPERATOR, True),
        ("admin", "admin", True),
    ],
)
def test_roles_include_the_rights_below_them(role: Role, needed: Role, ok: bool) -> None:
    assert allows(role, needed) is ok


def test_a_token_parses_back_and_only_its_secret_matches() -> None:
    token = issue_token()
    parsed = parse_token(token.text)
    assert parsed is not None and parsed[0] == token.id
    assert secret_matches(parsed[1], token.sha256)
    assert not secret_matches(parsed[1][:-1] + ("A" if parsed[1][-1] != "A" else "B"), token.sha256)
    assert issue_token().id != token.id


@pytest.mark.parametrize(
    "text", ["", "Bearer x", "rtpo_", "rtpo_0123456789ab_short", "rtpx_0123456789ab_" + "a" * 43]
)
def test_text_not_shaped_like_a_token_is_not_parsed(text: str) -> None:
    assert parse_token(text) is None


# --- commands ------------------------------------------------------------------------------


def test_fund_moves_the_book_and_records_before_and_after() -> None:
    book = book_with({A.id: 100})
    d = decide(cmd(Action.FUND, amount=250), book, {A.id: A}, exponent=2, now=NOW)
    assert book.position(A.id) == Position(available=350)
    assert [e.amount for e in d.journal] == [250]
    assert d.before is not None and d.before["available"] == "1.00"
    assert d.after is not None and d.after["available"] == "3.50"
    assert book.conservation().ok


def test_defund_below_what_is_available_is_refused_and_moves_nothing() -> None:
    book = book_with({A.id: 100})
    with pytest.raises(Refused) as info:
        decide(cmd(Action.DEFUND, amount=101), book, {A.id: A}, exponent=2, now=NOW)
    assert (info.value.status, info.value.code, info.value.field) == (
        409,
        "insufficient_position",
        "amount",
    )
    assert book.position(A.id) == Position(available=100)


@pytest.mark.parametrize("amount", [0, -5, None])
def test_a_non_positive_amount_is_refused(amount: int | None) -> None:
    book = book_with({A.id: 100})
    with pytest.raises(Refused) as info:
        decide(cmd(Action.FUND, amount=amount), book, {A.id: A}, exponent=2, now=NOW)
    assert info.value.code == "invalid_amount"


def test_unknown_participant_is_refused_404() -> None:
    with pytest.raises(Refused) as info:
        decide(cmd(Action.SUSPEND, "BNKZUS33XXX"), book_with({}), {}, exponent=2, now=NOW)
    assert (info.value.status, info.value.code) == (404, "unknown_participant")


def test_suspend_then_resume() -> None:
    book = book_with({A.id: 0})
    d = decide(cmd(Action.SUSPEND), book, {A.id: A}, exponent=2, now=NOW)
    assert d.participant is not None and d.participant.status is ParticipantStatus.SUSPENDED
    assert d.status_changed
    suspended = d.participant
    with pytest.raises(Refused, match="already suspended"):
        decide(cmd(Action.SUSPEND), book, {A.id: suspended}, exponent=2, now=NOW)
    d = decide(cmd(Action.RESUME), book, {A.id: suspended}, exponent=2, now=NOW)
    assert d.participant is not None and d.participant.status is ParticipantStatus.ACTIVE
    with pytest.raises(Refused) as info:
        decide(cmd(Action.RESUME), book, {A.id: A}, exponent=2, now=NOW)
    assert info.value.code == "not_suspended"


def test_onboard_opens_a_position_and_refuses_a_second_time() -> None:
    book = book_with({A.id: 0})
    d = decide(cmd(Action.ONBOARD, B.id, new=B), book, {A.id: A}, exponent=2, now=NOW)
    assert d.participant == B and B.id in book
    with pytest.raises(Refused) as info:
        decide(cmd(Action.ONBOARD, B.id, new=B), book, {A.id: A, B.id: B}, exponent=2, now=NOW)
    assert info.value.code == "participant_exists"
    twin = Participant(id="BNKEUS33XXX", member_id=A.member_id, name="Twin")
    with pytest.raises(Refused) as info:
        decide(cmd(Action.ONBOARD, twin.id, new=twin), book, {A.id: A}, exponent=2, now=NOW)
    assert (info.value.code, info.value.field) == ("member_id_taken", "member_id")


def test_set_limit_and_no_change() -> None:
    book = book_with({A.id: 0})
    limit = Money(minor=500_00, currency="USD", exponent=2)
    d = decide(cmd(Action.SET_LIMIT, limit=limit), book, {A.id: A}, exponent=2, now=NOW)
    assert d.participant is not None and d.participant.limit == limit
    assert d.after is not None and d.after["limit"] == "500.00"
    with pytest.raises(Refused, match="already has"):
        decide(cmd(Action.SET_LIMIT), book, {A.id: A}, exponent=2, now=NOW)


# --- maker-checker -----------------------------------------------------------------------


def test_only_amounts_over_the_threshold_need_approval() -> None:
    assert needs_approval(101, 100) and not needs_approval(100, 100)
    assert not needs_approval(10**12, None)


def test_a_second_operator_decides_a_pending_unexpired_approval() -> None:
    ok = {
        "approval": "AP1",
        "state": "pending",
        "maker": "alice",
        "expires_at": NOW + timedelta(hours=1),
    }
    check_decision(**ok, checker="bob", now=NOW)  # type: ignore[arg-type]
    for change, code in (
        ({"checker": "alice"}, "same_operator"),
        ({"state": "approved"}, "approval_not_pending"),
        ({"now": NOW + timedelta(hours=2)}, "approval_expired"),
    ):
        args = {**ok, "checker": "bob", "now": NOW, **change}
        with pytest.raises(Refused) as info:
            check_decision(**args)  # type: ignore[arg-type]
        assert info.value.code == code


# --- alerts --------------------------------------------------------------------------------


def observation(**kw: object) -> Observation:
    base: dict[str, object] = {
        "at": NOW,
        "engine_running": True,
        "conservation_ok": True,
        "discrepancy": 0,
        "participants": [
            ParticipantState(participant=A, position=Position(available=50_000_00), connected=True)
        ],
        "finals_last_minute": 0,
        "rejected_last_minute": 0,
        "timed_out_last_minute": 0,
        "queue_depth": 0,
        "pending_approvals": 0,
    }
    return Observation(**(base | kw))  # type: ignore[arg-type]


def test_a_healthy_switch_raises_no_alert() -> None:
    assert AlertBook(AlertLimits(low_position=10_000_00)).evaluate(observation()) == []


def test_each_rule_raises_its_alert() -> None:
    suspended = Participant(
        id=B.id, member_id=B.member_id, name="B", status=ParticipantStatus.SUSPENDED
    )
    o = observation(
        engine_running=False,
        conservation_ok=False,
        discrepancy=5,
        participants=[
            ParticipantState(participant=A, position=Position(available=10), connected=False),
            ParticipantState(participant=suspended, position=Position(), connected=None),
        ],
        finals_last_minute=100,
        rejected_last_minute=40,
        timed_out_last_minute=6,
        queue_depth=5000,
        pending_approvals=2,
    )
    alerts = AlertBook(AlertLimits(low_position=10_000_00)).evaluate(o)
    codes = {(a.code, a.participant) for a in alerts}
    assert codes == {
        ("engine_stopped", None),
        ("conservation_broken", None),
        ("low_position", A.id),
        ("participant_disconnected", A.id),
        ("position_exhausted", B.id),
        ("participant_suspended", B.id),
        ("high_reject_rate", None),
        ("timeouts", None),
        ("queue_backlog", None),
        ("approvals_pending", None),
    }
    assert [a.severity for a in alerts][:3] == ["critical"] * 3
    assert alerts[-1].severity == "info"


def test_an_alert_keeps_its_first_time_until_it_clears() -> None:
    book = AlertBook(AlertLimits(low_position=10_000_00))
    low = [ParticipantState(participant=A, position=Position(available=1), connected=True)]
    first = book.evaluate(observation(participants=low))
    later = book.evaluate(observation(participants=low, at=NOW + timedelta(minutes=5)))
    assert first[0].since == later[0].since == NOW
    assert book.evaluate(observation(at=NOW + timedelta(minutes=6))) == []
    again = book.evaluate(observation(participants=low, at=NOW + timedelta(minutes=7)))
    assert again[0].since == NOW + timedelta(minutes=7)


def test_rates_need_a_sample() -> None:
    o = observation(finals_last_minute=5, rejected_last_minute=5, timed_out_last_minute=5)
    assert AlertBook(AlertLimits(low_position=1)).evaluate(o) == []


# --- a payment's path ------------------------------------------------------------------------


def test_a_forwarded_and_settled_payment_shows_every_step() -> None:
    later = NOW + timedelta(seconds=1)
    path = transitions(
        state=PaymentState.SETTLED,
        reason=None,
        received_at=NOW,
        updated_at=later,
        forwarded_at=NOW + timedelta(milliseconds=3),
    )
    assert [(t.state, t.event) for t in path] == [
        (PaymentState.RECEIVED, None),
        (PaymentState.RESERVED, PaymentEvent.RESERVE),
        (PaymentState.FORWARDED, PaymentEvent.FORWARD),
        (PaymentState.SETTLED, PaymentEvent.ACCEPT),
    ]
    assert path[-1].at == later


def test_a_payment_refused_on_receipt_and_one_timed_out() -> None:
    refused = transitions(
        state=PaymentState.REJECTED,
        reason="AM04",
        received_at=NOW,
        updated_at=NOW,
        forwarded_at=None,
    )
    assert [(t.state, t.reason) for t in refused] == [
        (PaymentState.RECEIVED, None),
        (PaymentState.REJECTED, "AM04"),
    ]
    timed_out = transitions(
        state=PaymentState.TIMED_OUT,
        reason="AB05",
        received_at=NOW,
        updated_at=NOW + timedelta(seconds=5),
        forwarded_at=NOW,
    )
    assert timed_out[-1].event is PaymentEvent.TIMEOUT and timed_out[-1].reason == "AB05"
    creditor = transitions(
        state=PaymentState.REJECTED,
        reason="AC03",
        received_at=NOW,
        updated_at=NOW,
        forwarded_at=NOW,
    )
    assert creditor[-1].event is PaymentEvent.CREDITOR_REJECT
