"""Portability claims: moving an alias to another participant (RULEBOOK §5).

A participant (the claimant) asks for an alias another participant owns to point at an
account of its own. The claim is `open` for a claim period; in that time the owner
confirms it (`confirmed`: the alias moves at once) or rejects it (`rejected`: nothing
moves), or the claimant cancels it (`cancelled`). If the period runs out unanswered
the claim `completed`: silence is consent, and the alias moves. `TRANSITIONS` is the
whole machine as one literal table; every state but `open` is final, and an event the
table does not allow is a bug in the caller (`IllegalClaimTransition`). Whether a
caller may send an event (is it the owner, is the claim still open) is decided before,
in `directory.py`, and refused there with a `DirectoryError`.

EVPs are not portable: a random key belongs to the participant that generated it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import datetime
from enum import StrEnum
from typing import Final

from switch.core.errors import InternalError
from switch.directory.aliases import (
    AliasKey,
    AliasType,
    EvpNotPortable,
    InvalidAlias,
    check_account,
    check_name,
    check_participant,
    normalize,
    require_aware,
)

__all__ = [
    "CLAIM_TRANSITIONS",
    "FINAL_CLAIM_STATES",
    "MAX_CLAIM_ID",
    "MOVES_ALIAS",
    "Claim",
    "ClaimEvent",
    "ClaimState",
    "IllegalClaimTransition",
    "claim_events_from",
    "next_claim_state",
]

MAX_CLAIM_ID: Final = 64
"""Longest claim id, in characters."""


class ClaimState(StrEnum):
    """Where a portability claim is."""

    OPEN = "open"
    CONFIRMED = "confirmed"
    REJECTED = "rejected"
    COMPLETED = "completed"
    CANCELLED = "cancelled"


class ClaimEvent(StrEnum):
    """What can happen to an open claim."""

    CONFIRM = "confirm"
    REJECT = "reject"
    EXPIRE = "expire"
    CANCEL = "cancel"


_S = ClaimState
_E = ClaimEvent

CLAIM_TRANSITIONS: Final[Mapping[tuple[ClaimState, ClaimEvent], ClaimState]] = {
    # the owner agrees: the alias moves to the claimant now
    (_S.OPEN, _E.CONFIRM): _S.CONFIRMED,
    # the owner refuses: the alias stays
    (_S.OPEN, _E.REJECT): _S.REJECTED,
    # the claim period ran out unanswered: the alias moves to the claimant
    (_S.OPEN, _E.EXPIRE): _S.COMPLETED,
    # the claimant withdraws: the alias stays
    (_S.OPEN, _E.CANCEL): _S.CANCELLED,
}
"""The whole claim lifecycle: (state, event) -> next state. Anything else is illegal."""

FINAL_CLAIM_STATES: Final[frozenset[ClaimState]] = frozenset(
    state for state in ClaimState if state is not ClaimState.OPEN
)
"""States a claim never leaves."""

MOVES_ALIAS: Final[frozenset[ClaimState]] = frozenset({_S.CONFIRMED, _S.COMPLETED})
"""Final states in which the alias has moved to the claimant."""

_EVENTS_FROM: Final[Mapping[ClaimState, frozenset[ClaimEvent]]] = {
    state: frozenset(e for (s, e) in CLAIM_TRANSITIONS if s is state) for state in ClaimState
}


class IllegalClaimTransition(InternalError):
    """An event that the claim's current state does not allow."""

    state: ClaimState
    event: ClaimEvent

    def __init__(self, state: ClaimState, event: ClaimEvent) -> None:
        super().__init__(f"illegal claim transition: event {event!s} in state {state!s}")
        self.state = state
        self.event = event


def next_claim_state(state: ClaimState, event: ClaimEvent) -> ClaimState:
    """The state after `event` in `state`; IllegalClaimTransition if the table forbids it."""
    try:
        return CLAIM_TRANSITIONS[state, event]
    except KeyError:
        raise IllegalClaimTransition(state, event) from None


def claim_events_from(state: ClaimState) -> frozenset[ClaimEvent]:
    """The events `state` allows."""
    return _EVENTS_FROM[state]


@dataclass(frozen=True, slots=True, kw_only=True)
class Claim:
    """A claimant's request to move alias (kind, value) from `owner` to its `account`."""

    id: str
    kind: AliasType
    value: str
    claimant: str
    owner: str
    account: str
    """The claimant's account the alias will point at."""
    name: str
    """The display name the alias will carry once it moves."""
    state: ClaimState
    opened_at: datetime
    expires_at: datetime
    """When the claim period runs out: from then on only expiry may close the claim."""
    closed_at: datetime | None
    version: int

    def __post_init__(self) -> None:
        if not isinstance(self.id, str) or not 1 <= len(self.id) <= MAX_CLAIM_ID:
            raise ValueError(f"a claim id is 1 to {MAX_CLAIM_ID} characters: {self.id!r}")
        if not self.id.isprintable() or self.id.strip() != self.id:
            raise ValueError(f"a claim id is printable, without surrounding blanks: {self.id!r}")
        object.__setattr__(self, "kind", AliasType(self.kind))
        object.__setattr__(self, "state", ClaimState(self.state))
        if self.kind is AliasType.EVP:
            raise EvpNotPortable("an EVP cannot be claimed")
        if normalize(self.kind, self.value) != self.value:
            raise InvalidAlias(f"{self.kind} alias value is not in canonical form: {self.value!r}")
        for who in (self.claimant, self.owner):
            if check_participant(who) != who:
                raise ValueError(f"participant id must have 11 characters: {who}")
        if self.claimant == self.owner:
            raise ValueError(f"claimant and owner are both {self.owner}")
        check_account(self.account)
        check_name(self.name)
        require_aware(self.opened_at, "opened_at")
        require_aware(self.expires_at, "expires_at")
        if self.expires_at <= self.opened_at:
            raise ValueError(f"claim {self.id} expires at {self.expires_at}, not after opening")
        if (self.closed_at is None) != (self.state is ClaimState.OPEN):
            raise ValueError(f"claim {self.id} is {self.state}: closed_at must be set iff closed")
        if self.closed_at is not None:
            require_aware(self.closed_at, "closed_at")
        if type(self.version) is not int or self.version < 0:
            raise ValueError(f"claim version must be an int >= 0: {self.version!r}")

    @property
    def key(self) -> AliasKey:
        """The claimed alias's identity: (kind, canonical value)."""
        return (self.kind, self.value)

    @property
    def is_open(self) -> bool:
        """True while the claim awaits an answer."""
        return self.state is ClaimState.OPEN

    def is_due(self, now: datetime) -> bool:
        """True if the claim is open and its period has run out at `now`."""
        return self.is_open and self.expires_at <= now

    def step(self, event: ClaimEvent, at: datetime) -> Claim:
        """The claim after `event` at `at`: closed in the table's next state, not yet stored."""
        require_aware(at, "at")
        return replace(self, state=next_claim_state(self.state, event), closed_at=at, version=0)
