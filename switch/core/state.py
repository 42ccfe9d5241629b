"""The payment lifecycle as one pure state machine.

A credit transfer is `received` when the switch accepts it for processing, `reserved`
once its amount is reserved on the debtor agent's position, `forwarded` once sent to the
creditor agent, and ends `settled` (the creditor agent accepted), `rejected` (a rule, the
ledger or the creditor agent refused it) or `timed_out` (the creditor agent did not
answer in time). `TRANSITIONS` is the whole machine, written as one literal table: a
(state, event) pair that is not in it is a bug in the caller and `next_state` raises
`IllegalTransition`. Final states have no outgoing transition, which is what makes
settlement final and irrevocable and a late answer harmless.

`INQUIRY_STATUS` says which pacs.002 transaction status a state reports to a pacs.028
inquirer (RULEBOOK §3 step 5).
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from typing import Final

from switch.core.errors import InternalError

__all__ = [
    "FINAL_STATES",
    "INQUIRY_STATUS",
    "TRANSITIONS",
    "IllegalTransition",
    "PaymentEvent",
    "PaymentState",
    "events_from",
    "inquiry_status",
    "is_final",
    "next_state",
]


class PaymentState(StrEnum):
    """Where a payment is in its lifecycle."""

    RECEIVED = "received"
    RESERVED = "reserved"
    FORWARDED = "forwarded"
    SETTLED = "settled"
    REJECTED = "rejected"
    TIMED_OUT = "timed_out"


class PaymentEvent(StrEnum):
    """What can happen to a payment."""

    RESERVE = "reserve"
    REJECT = "reject"
    FORWARD = "forward"
    ACCEPT = "accept"
    CREDITOR_REJECT = "creditor_reject"
    TIMEOUT = "timeout"


_S = PaymentState
_E = PaymentEvent

TRANSITIONS: Final[Mapping[tuple[PaymentState, PaymentEvent], PaymentState]] = {
    # accepted for processing: the debtor agent's position covers the amount
    (_S.RECEIVED, _E.RESERVE): _S.RESERVED,
    # a business rule or the ledger (AM04) refused it: nothing was reserved
    (_S.RECEIVED, _E.REJECT): _S.REJECTED,
    # refused after reservation, before forwarding (e.g. creditor agent went offline)
    (_S.RESERVED, _E.REJECT): _S.REJECTED,
    # sent to the creditor agent; the response timeout starts
    (_S.RESERVED, _E.FORWARD): _S.FORWARDED,
    # creditor agent answered ACSP: settle
    (_S.FORWARDED, _E.ACCEPT): _S.SETTLED,
    # creditor agent answered RJCT: release
    (_S.FORWARDED, _E.CREDITOR_REJECT): _S.REJECTED,
    # creditor agent did not answer in time (AB05): release
    (_S.FORWARDED, _E.TIMEOUT): _S.TIMED_OUT,
}
"""The whole lifecycle: (state, event) -> next state. Anything else is illegal."""

FINAL_STATES: Final[frozenset[PaymentState]] = frozenset(
    {PaymentState.SETTLED, PaymentState.REJECTED, PaymentState.TIMED_OUT}
)
"""States a payment never leaves."""

INQUIRY_STATUS: Final[Mapping[PaymentState, str]] = {
    _S.RECEIVED: "RCVD",
    _S.RESERVED: "PDNG",
    _S.FORWARDED: "PDNG",
    _S.SETTLED: "ACSC",
    _S.REJECTED: "RJCT",
    _S.TIMED_OUT: "RJCT",
}
"""The pacs.002 `TxSts` (ExternalPaymentTransactionStatus1Code) each state reports."""

_EVENTS_FROM: Final[Mapping[PaymentState, frozenset[PaymentEvent]]] = {
    state: frozenset(e for (s, e) in TRANSITIONS if s is state) for state in PaymentState
}


class IllegalTransition(InternalError):
    """An event that the payment's current state does not allow."""

    state: PaymentState
    event: PaymentEvent

    def __init__(self, state: PaymentState, event: PaymentEvent) -> None:
        super().__init__(f"illegal transition: event {event!s} in state {state!s}")
        self.state = state
        self.event = event


def next_state(state: PaymentState, event: PaymentEvent) -> PaymentState:
    """The state after `event` in `state`; IllegalTransition if the table forbids it."""
    try:
        return TRANSITIONS[state, event]
    except KeyError:
        raise IllegalTransition(state, event) from None


def is_final(state: PaymentState) -> bool:
    """True if `state` has no outgoing transition."""
    return state in FINAL_STATES


def events_from(state: PaymentState) -> frozenset[PaymentEvent]:
    """The events `state` allows."""
    return _EVENTS_FROM[state]


def inquiry_status(state: PaymentState) -> str:
    """The pacs.002 transaction status reported for `state` to a pacs.028 inquirer."""
    return INQUIRY_STATUS[state]
