"""The payment state machine: the literal table, and nothing else, is legal."""

from __future__ import annotations

import itertools

import pytest

from switch.core.errors import InternalError
from switch.core.state import (
    FINAL_STATES,
    TRANSITIONS,
    IllegalTransition,
    PaymentEvent,
    PaymentState,
    events_from,
    inquiry_status,
    is_final,
    next_state,
)

S, E = PaymentState, PaymentEvent

LEGAL = [
    (S.RECEIVED, E.RESERVE, S.RESERVED),
    (S.RECEIVED, E.REJECT, S.REJECTED),
    (S.RESERVED, E.REJECT, S.REJECTED),
    (S.RESERVED, E.FORWARD, S.FORWARDED),
    (S.FORWARDED, E.ACCEPT, S.SETTLED),
    (S.FORWARDED, E.CREDITOR_REJECT, S.REJECTED),
    (S.FORWARDED, E.TIMEOUT, S.TIMED_OUT),
]

ILLEGAL = [
    (s, e)
    for s, e in itertools.product(PaymentState, PaymentEvent)
    if (s, e) not in {(s2, e2) for s2, e2, _ in LEGAL}
]


def test_table_is_exactly_the_rulebook_flow() -> None:
    assert dict(TRANSITIONS) == {(s, e): t for s, e, t in LEGAL}


@pytest.mark.parametrize(("state", "event", "target"), LEGAL)
def test_legal_transition(state: PaymentState, event: PaymentEvent, target: PaymentState) -> None:
    assert next_state(state, event) is target
    assert event in events_from(state)


@pytest.mark.parametrize(("state", "event"), ILLEGAL)
def test_illegal_transition_raises(state: PaymentState, event: PaymentEvent) -> None:
    with pytest.raises(IllegalTransition) as info:
        next_state(state, event)
    assert info.value.state is state
    assert info.value.event is event
    assert isinstance(info.value, InternalError)
    assert str(event) in str(info.value)
    assert str(state) in str(info.value)
    assert event not in events_from(state)


def test_illegal_count() -> None:
    assert len(ILLEGAL) == len(PaymentState) * len(PaymentEvent) - len(LEGAL)


@pytest.mark.parametrize("state", sorted(FINAL_STATES))
def test_final_states_have_no_outgoing_transition(state: PaymentState) -> None:
    assert is_final(state)
    assert events_from(state) == frozenset()
    for event in PaymentEvent:
        with pytest.raises(IllegalTransition):
            next_state(state, event)


def test_final_states() -> None:
    assert frozenset({S.SETTLED, S.REJECTED, S.TIMED_OUT}) == FINAL_STATES
    assert not any(is_final(s) for s in (S.RECEIVED, S.RESERVED, S.FORWARDED))


def test_every_state_is_reachable_from_received() -> None:
    seen, todo = {S.RECEIVED}, [S.RECEIVED]
    while todo:
        state = todo.pop()
        for event in events_from(state):
            target = next_state(state, event)
            if target not in seen:
                seen.add(target)
                todo.append(target)
    assert seen == set(PaymentState)


def test_values_are_the_wire_and_storage_names() -> None:
    assert [s.value for s in PaymentState] == [
        "received",
        "reserved",
        "forwarded",
        "settled",
        "rejected",
        "timed_out",
    ]
    assert next_state(S("received"), E("reserve")) is S.RESERVED


@pytest.mark.parametrize(
    ("state", "status"),
    [
        (S.RECEIVED, "RCVD"),
        (S.RESERVED, "PDNG"),
        (S.FORWARDED, "PDNG"),
        (S.SETTLED, "ACSC"),
        (S.REJECTED, "RJCT"),
        (S.TIMED_OUT, "RJCT"),
    ],
)
def test_inquiry_status(state: PaymentState, status: str) -> None:
    assert inquiry_status(state) == status
