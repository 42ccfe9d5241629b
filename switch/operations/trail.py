"""A payment's state transitions, read back from what the store keeps of it: no I/O.

The store keeps a payment's current state and reason, when it was created and last
changed, and every message of it. That is enough to give its whole path through the
lifecycle (`switch.core.state.TRANSITIONS`) with times: it was received when its
pacs.008 arrived; a payment the switch forwarded was reserved and forwarded when the
forwarded pacs.008 was written; a final state was reached when the payment last changed.
A payment not forwarded that ended rejected was refused on receipt. Every step is
checked against the transition table, so the path shown is one the machine allows.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from switch.core.state import PaymentEvent, PaymentState, next_state

__all__ = ["Transition", "transitions"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Transition:
    """One step of a payment's lifecycle."""

    state: PaymentState
    event: PaymentEvent | None
    """What moved it there (None for the first state)."""
    at: datetime
    reason: str | None = None


_FINAL_EVENT = {
    PaymentState.SETTLED: PaymentEvent.ACCEPT,
    PaymentState.REJECTED: PaymentEvent.CREDITOR_REJECT,
    PaymentState.TIMED_OUT: PaymentEvent.TIMEOUT,
}


def transitions(
    *,
    state: PaymentState,
    reason: str | None,
    received_at: datetime,
    updated_at: datetime,
    forwarded_at: datetime | None,
) -> list[Transition]:
    """The path of a payment now in `state` (see the module's docstring)."""
    path = [Transition(state=PaymentState.RECEIVED, event=None, at=received_at)]

    def step(event: PaymentEvent, at: datetime, why: str | None = None) -> None:
        path.append(
            Transition(state=next_state(path[-1].state, event), event=event, at=at, reason=why)
        )

    if state is PaymentState.RECEIVED:
        return path
    if forwarded_at is None:
        if state is PaymentState.REJECTED:
            step(PaymentEvent.REJECT, updated_at, reason)
        else:
            step(PaymentEvent.RESERVE, updated_at)
            if state is not PaymentState.RESERVED:
                step(PaymentEvent.FORWARD, updated_at)
                if state in _FINAL_EVENT:
                    step(_FINAL_EVENT[state], updated_at, reason)
        return path
    step(PaymentEvent.RESERVE, forwarded_at)
    step(PaymentEvent.FORWARD, forwarded_at)
    if state in _FINAL_EVENT:
        step(_FINAL_EVENT[state], updated_at, reason)
    return path
